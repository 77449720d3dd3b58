#include "textflag.h"

// See chunksums_amd64.go for what this computes and why.

// FOLD carries the accumulator acc (one chunk's 64 bytes, four 128-bit
// lanes) 64 bytes forward and adds the chunk's next 64 bytes at off(R8).
#define FOLD(acc, data, tmp, off) \
	VMOVDQU64  off(R8), data; \
	VPCLMULQDQ $0x11, Z0, acc, tmp; \
	VPCLMULQDQ $0x00, Z0, acc, acc; \
	VPTERNLOGQ $0x96, data, tmp, acc

// FINISH folds acc's lanes 0-2 onto lane 3 and reduces those 16 bytes
// (REDUCE).
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
	REDUCE(X3, off)

// REDUCE reduces the 16 bytes a chunk was folded to, in x, with two CRC32
// instructions and stores the chunk's CRC32C big-endian at off(DI).
#define REDUCE(x, off) \
	VMOVQ   x, R9; \
	VPEXTRQ $1, x, R10; \
	XORL    R11, R11; \
	CRC32Q  R9, R11; \
	CRC32Q  R10, R11; \
	NOTL    R11; \
	BSWAPL  R11; \
	MOVL    R11, off(DI)

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
	// The next group's lines 0-6 of each chunk, as these are taken (line
	// 7 is left to the hardware's prefetcher): 9.3-12.7 GB/s from memory,
	// against 6.9-10.1 without, on an AVX-512 Xeon.
	PREFETCHT0 1984(R8)
	PREFETCHT0 2496(R8)
	PREFETCHT0 3008(R8)
	PREFETCHT0 3520(R8)
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

// FOLDLANES carries the lanes in acc (one 16-byte lane in an XMM register,
// two in a YMM one) 64 bytes forward with the fold in k and adds the
// chunk's next bytes at mem; tmp is scratch.
#define FOLDLANES(k, acc, tmp, mem) \
	VPCLMULQDQ $0x11, k, acc, tmp; \
	VPCLMULQDQ $0x00, k, acc, acc; \
	VPXOR      mem, acc, acc; \
	VPXOR      tmp, acc, acc

// CARRY128 adds to sum the lane acc carried forward by the fold in k
// (scratch tmp and acc).
#define CARRY128(acc, k, tmp, sum) \
	VPCLMULQDQ $0x11, k, acc, tmp; \
	VPCLMULQDQ $0x00, k, acc, acc; \
	VPXOR      tmp, sum, sum; \
	VPXOR      acc, sum, sum

// func chunkSums1(dst, p *byte, chunks int, k *[24]uint64)
//
// chunkSums4's fold with 128-bit registers (AVX and PCLMULQDQ), a chunk at
// a time: its four lanes are four XMM registers.
TEXT ·chunkSums1(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ p+8(FP), SI
	MOVQ chunks+16(FP), CX
	MOVQ k+24(FP), AX
	VMOVDQU 0(AX), X0   // the 512-bit fold
	VMOVDQU 64(AX), X1  // lane 0's fold onto lane 3 (384 bits)
	VMOVDQU 80(AX), X2  // lane 1's (256)
	VMOVDQU 96(AX), X3  // lane 2's (128)
	VMOVDQU 128(AX), X4 // the CRC's starting 0xFFFFFFFF

chunk:
	VPXOR   0(SI), X4, X5
	VMOVDQU 16(SI), X6
	VMOVDQU 32(SI), X7
	VMOVDQU 48(SI), X8
	ADDQ    $64, SI
	MOVQ    $7, DX

step:
	FOLDLANES(X0, X5, X9, 0(SI))
	FOLDLANES(X0, X6, X10, 16(SI))
	FOLDLANES(X0, X7, X11, 32(SI))
	FOLDLANES(X0, X8, X12, 48(SI))
	ADDQ $64, SI
	DECQ DX
	JNZ  step

	// Lanes 0-2 onto lane 3, then the 16 bytes reduced.
	CARRY128(X5, X1, X9, X8)
	CARRY128(X6, X2, X10, X8)
	CARRY128(X7, X3, X11, X8)
	REDUCE(X8, 0)

	ADDQ $4, DI
	DECQ CX
	JNZ  chunk
	RET

// FINISH256 folds a chunk's lanes 0-1 (in lo) and 2 (the low half of hi)
// onto lane 3 (hi's high half) and reduces those 16 bytes (REDUCE). Y1
// holds lane 0's and lane 1's folds, X2 lane 2's.
#define FINISH256(lo, hi, xlo, xhi, off) \
	VPCLMULQDQ   $0x11, Y1, lo, Y9; \
	VPCLMULQDQ   $0x00, Y1, lo, lo; \
	VPXOR        Y9, lo, lo; \
	VPCLMULQDQ   $0x11, X2, xhi, X10; \
	VPCLMULQDQ   $0x00, X2, xhi, X11; \
	VEXTRACTI128 $1, hi, X12; \
	VEXTRACTI128 $1, lo, X13; \
	VPXOR        X13, xlo, xlo; \
	VPXOR        X10, xlo, xlo; \
	VPXOR        X11, xlo, xlo; \
	VPXOR        X12, xlo, xlo; \
	REDUCE(xlo, off)

// func chunkSums2(dst, p *byte, pairs int, k *[24]uint64)
//
// chunkSums4's fold with 256-bit registers (AVX2 and VPCLMULQDQ without
// AVX-512), two chunks at a time: a chunk's four lanes are two YMM
// registers.
TEXT ·chunkSums2(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ p+8(FP), SI
	MOVQ pairs+16(FP), CX
	MOVQ k+24(FP), AX
	VBROADCASTI128 0(AX), Y0 // the 512-bit fold, in both halves
	VMOVDQU 64(AX), Y1       // lanes 0 and 1's folds onto lane 3 (384, 256 bits)
	VMOVDQU 96(AX), X2       // lane 2's (128)
	VMOVDQU 128(AX), Y3      // the CRC's starting 0xFFFFFFFF

pair:
	VPXOR   0(SI), Y3, Y5
	VMOVDQU 32(SI), Y6
	VPXOR   512(SI), Y3, Y7
	VMOVDQU 544(SI), Y8
	LEAQ    64(SI), R8
	MOVQ    $7, DX

pairstep:
	// The next pair's lines, as these are taken: on Zen 3 the hardware's
	// prefetching alone gave 5.8 GB/s from memory, this 10 (and beyond the
	// end a prefetch is only a hint, never a fault).
	PREFETCHT0 1024(R8)
	PREFETCHT0 1536(R8)
	FOLDLANES(Y0, Y5, Y9, 0(R8))
	FOLDLANES(Y0, Y6, Y10, 32(R8))
	FOLDLANES(Y0, Y7, Y11, 512(R8))
	FOLDLANES(Y0, Y8, Y12, 544(R8))
	ADDQ $64, R8
	DECQ DX
	JNZ  pairstep

	FINISH256(Y5, Y6, X5, X6, 0)
	FINISH256(Y7, Y8, X7, X8, 4)

	ADDQ $1024, SI
	ADDQ $8, DI
	DECQ CX
	JNZ  pair

	VZEROUPPER
	RET

// CRC3 runs the 8 bytes at off(SI) of the chunks at 0, 512 and 1024
// through their CRC32 streams R9, R10, R11.
#define CRC3(off) \
	CRC32Q off(SI), R9; \
	CRC32Q 512+off(SI), R10; \
	CRC32Q 1024+off(SI), R11

// CRC3x64 is CRC3 for the 64 bytes at 0(SI).
#define CRC3x64 \
	CRC3(0); CRC3(8); CRC3(16); CRC3(24); CRC3(32); CRC3(40); CRC3(48); CRC3(56)

// STORECRC stores the CRC32C whose stream is r big-endian at off(DI).
#define STORECRC(r, off) \
	NOTL   r; \
	BSWAPL r; \
	MOVL   r, off(DI)

// func chunkSumsCRC3(dst, p *byte, chunks int)
//
// Three chunks side by side through the CRC32 instruction, each a stream
// of its own, so that three are in flight while one takes its latency; a
// chunk or two left over go one at a time.
TEXT ·chunkSumsCRC3(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ p+8(FP), SI
	MOVQ chunks+16(FP), CX
	CMPQ CX, $3
	JB   single

triple:
	MOVL $0xFFFFFFFF, R9
	MOVL $0xFFFFFFFF, R10
	MOVL $0xFFFFFFFF, R11
	MOVQ $8, DX

triplestep:
	// The next triple's lines, as these are taken: on Zen 2, from memory
	// 6.2-6.6 GB/s with, 4.0-4.2 without; in the cache 18.3 with, 14.7-16
	// without (two triples ahead: no faster).
	PREFETCHT0 1536(SI)
	PREFETCHT0 2048(SI)
	PREFETCHT0 2560(SI)
	CRC3x64
	ADDQ $64, SI
	DECQ DX
	JNZ  triplestep

	STORECRC(R9, 0)
	STORECRC(R10, 4)
	STORECRC(R11, 8)
	ADDQ $1024, SI
	ADDQ $12, DI
	SUBQ $3, CX
	CMPQ CX, $3
	JAE  triple

single:
	TESTQ CX, CX
	JZ    done

one:
	MOVL $0xFFFFFFFF, R9
	MOVQ $64, DX

onestep:
	CRC32Q 0(SI), R9
	ADDQ   $8, SI
	DECQ   DX
	JNZ    onestep

	STORECRC(R9, 0)
	ADDQ $4, DI
	DECQ CX
	JNZ  one

done:
	RET

// func cpuid(leaf, sub uint32) (eax, ebx, ecx, edx uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-24
	MOVL leaf+0(FP), AX
	MOVL sub+4(FP), CX
	CPUID
	MOVL AX, eax+8(FP)
	MOVL BX, ebx+12(FP)
	MOVL CX, ecx+16(FP)
	MOVL DX, edx+20(FP)
	RET
