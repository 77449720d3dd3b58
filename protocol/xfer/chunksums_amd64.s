#include "textflag.h"

// See chunksums_amd64.go for what this computes and why.

// FOLD carries the accumulator acc (one chunk's 64 bytes, four 128-bit
// lanes) 64 bytes forward and adds the chunk's next 64 bytes at off(R8).
#define FOLD(acc, data, tmp, off) \
	VMOVDQU64  off(R8), data; \
	VPCLMULQDQ $0x11, Z0, acc, tmp; \
	VPCLMULQDQ $0x00, Z0, acc, acc; \
	VPTERNLOGQ $0x96, data, tmp, acc

// FINISH folds acc's lanes 0-2 onto lane 3, reduces those 16 bytes with two
// CRC32 instructions and stores the chunk's CRC32C big-endian at off(DI).
#define FINISH(acc, off) \
	VPCLMULQDQ    $0x00, Z1, acc, Z3; \
	VPCLMULQDQ    $0x11, Z1, acc, Z4; \
	VPXORQ        Z4, Z3, Z3; \
	VEXTRACTI32X4 $3, acc, X5; \
	VEXTRACTI64X4 $1, Z3, Y4; \
	VPXOR         Y4, Y3, Y3; \
	VEXTRACTI128  $1, Y3, X4; \
	VPXOR         X4, X3, X3; \
	VPXOR         X5, X3, X3; \
	VMOVQ         X3, R9; \
	VPEXTRQ       $1, X3, R10; \
	XORL          R11, R11; \
	CRC32Q        R9, R11; \
	CRC32Q        R10, R11; \
	NOTL          R11; \
	BSWAPL        R11; \
	MOVL          R11, off(DI)

// func chunkSums4(dst, p *byte, groups int, k *[24]uint64)
TEXT ·chunkSums4(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ p+8(FP), SI
	MOVQ groups+16(FP), CX
	MOVQ k+24(FP), AX
	VMOVDQU64 0(AX), Z0   // the 512-bit fold
	VMOVDQU64 64(AX), Z1  // the fold of lanes 0-2 onto lane 3
	VMOVDQU64 128(AX), Z2 // the CRC's starting 0xFFFFFFFF

group:
	// The first 64 bytes of each of the four chunks.
	VMOVDQU64 0(SI), Z10
	VMOVDQU64 512(SI), Z11
	VMOVDQU64 1024(SI), Z12
	VMOVDQU64 1536(SI), Z13
	VPXORQ    Z2, Z10, Z10
	VPXORQ    Z2, Z11, Z11
	VPXORQ    Z2, Z12, Z12
	VPXORQ    Z2, Z13, Z13

	// Their other seven 64-byte pieces.
	LEAQ 64(SI), R8
	MOVQ $7, DX

piece:
	FOLD(Z10, Z14, Z3, 0)
	FOLD(Z11, Z15, Z4, 512)
	FOLD(Z12, Z16, Z5, 1024)
	FOLD(Z13, Z17, Z6, 1536)
	ADDQ $64, R8
	DECQ DX
	JNZ  piece

	FINISH(Z10, 0)
	FINISH(Z11, 4)
	FINISH(Z12, 8)
	FINISH(Z13, 12)

	ADDQ $2048, SI
	ADDQ $16, DI
	DECQ CX
	JNZ  group

	VZEROUPPER
	RET
