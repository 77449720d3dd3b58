package xfer

import (
	"math/bits"
	"slices"

	"golang.org/x/sys/cpu"

	"github.com/godfs/godfs/protocol"
)

// The CRC32C of HDFS's 512-byte chunks, four chunks at a time, with
// AVX-512's carry-less multiply (VPCLMULQDQ). The standard library's
// CRC32C runs the SSE4.2 CRC32 instruction, at most 8 bytes a cycle, and
// on a chunk as short as 512 bytes spends part of that combining three
// interleaved CRCs. Here each chunk is folded 64 bytes at a time, four
// chunks side by side so the multiplies overlap, and the last 16 bytes
// left of a chunk are reduced with two CRC32 instructions.
//
// The folding is that of Intel's "Fast CRC Computation for Generic
// Polynomials Using PCLMULQDQ": a 16-byte block A = L·x⁶⁴ + H that stands
// D bits before the block it is added to contributes A·x^D, congruent
// (mod the polynomial P) to L·(x^(D+64) mod P) + H·(x^D mod P), two 64×32
// bit products. The constants are computed below, not copied in.

// groupBytes is the data one step of chunkSums4 covers.
const groupBytes = 4 * protocol.BytesPerChecksum

// The ways to sum chunks, each with the registers and instructions it
// needs: four chunks at a time with AVX-512, two with 256-bit registers
// (AVX2 and VPCLMULQDQ, as on AMD's Zen 3), one with 128-bit registers
// (AVX and PCLMULQDQ); crc3, no fold, runs three chunks side by side
// through the CRC32 instruction (SSE4.2); foldNone is the standard
// library. Where there is no VPCLMULQDQ, crc3 is the faster of the last
// two (on AMD's Zen 2, 1 MiB of chunks in the cache: 18.3 GB/s against
// the 128-bit fold's 8.6-11), but for CPUs whose CRC32 instruction is slow
// (AMD's Zen 1: 8 bytes in about 3 cycles, 4.7 GB/s a 512-byte chunk with
// the standard library), where the 128-bit fold is what keeps checksums
// cheap. fold is the one this machine runs; tests set it to each it can.
const (
	foldNone = iota
	crc3
	fold128
	fold256
	fold512
)

var fold = func() int {
	switch {
	case canRun(fold512):
		return fold512
	case canRun(fold256):
		return fold256
	case canRun(fold128) && slowCRC32():
		return fold128
	case canRun(crc3):
		return crc3
	}
	return foldNone
}()

// canRun reports whether this CPU has what way f of summing chunks needs.
func canRun(f int) bool {
	x := cpu.X86
	clmul := x.HasSSE42 && x.HasAVX && x.HasPCLMULQDQ
	switch f {
	case crc3:
		return x.HasSSE42
	case fold128:
		return clmul
	case fold256:
		// golang.org/x/sys/cpu reports VPCLMULQDQ only with AVX-512,
		// and Zen 3 has it without: CPUID leaf 7 tells (asked only
		// where cpu found AVX2, which it reads from that leaf).
		if !clmul || !x.HasAVX2 {
			return false
		}
		_, _, ecx, _ := cpuid(7, 0)
		return ecx&(1<<10) != 0
	case fold512:
		return clmul && x.HasAVX512F && x.HasAVX512VPCLMULQDQ
	}
	return f == foldNone
}

// slowCRC32 reports a CPU whose CRC32 instruction takes about 3 cycles
// for 8 bytes, not 1: AMD's Zen 1 and Zen+ (family 0x17 below model 0x30;
// Zen 2 is model 0x31 on) and Hygon's Dhyana (family 0x18), which is
// Zen 1. CPUID leaf 1 gives the family and model.
func slowCRC32() bool {
	eax, _, _, _ := cpuid(1, 0)
	family, model := eax>>8&0xF, eax>>4&0xF
	if family == 0xF {
		family += eax >> 20 & 0xFF
		model |= eax >> 16 & 0xF << 4
	}
	return family == 0x17 && model < 0x30 || family == 0x18
}

// foldConsts is what chunkSums4 loads: the 512-bit fold for each 128-bit
// lane, the fold of lanes 0-2 onto lane 3 at a chunk's end (lane 3 zero),
// and the 0xFFFFFFFF that starts a CRC32C, xored into a chunk's first
// bytes.
var foldConsts = func() (k [24]uint64) {
	for l := range 4 {
		k[2*l], k[2*l+1] = foldPair(512)
	}
	for l, d := range []int{384, 256, 128} {
		k[8+2*l], k[8+2*l+1] = foldPair(d)
	}
	k[16] = 0xFFFFFFFF
	return k
}()

// foldPair is the constants that carry a 16-byte block d bits forward: for
// its first 8 bytes and for its last 8, each bit-reflected into a 64-bit
// lane. The carry-less product of two reflected values comes out one bit
// short (a factor x), hence the -1.
func foldPair(d int) (lo, hi uint64) {
	return reflected(xPowMod(d + 64 - 1)), reflected(xPowMod(d - 1))
}

// castagnoli is CRC32C's polynomial P without its x³² term, in normal bit
// order (bit i is the coefficient of x^i).
const castagnoli = 0x1EDC6F41

// xPowMod is x^n mod P in normal bit order.
func xPowMod(n int) uint32 {
	r := uint32(1)
	for range n {
		carry := r&(1<<31) != 0
		r <<= 1
		if carry {
			r ^= castagnoli
		}
	}
	return r
}

// reflected places a polynomial of degree < 32 in a 64-bit lane whose bit j
// is the coefficient of x^(63-j), as the reflected CRC reads memory.
func reflected(p uint32) uint64 { return bits.Reverse64(uint64(p)) }

// chunkSums4 writes the big-endian CRC32C of each 512-byte chunk in
// groups*4 chunks at p to dst (groups*16 bytes).
//
//go:noescape
func chunkSums4(dst, p *byte, groups int, k *[24]uint64)

// chunkSums2 is chunkSums4 for pairs of chunks, with 256-bit registers.
//
//go:noescape
func chunkSums2(dst, p *byte, pairs int, k *[24]uint64)

// chunkSums1 is chunkSums4 for chunks one at a time, with 128-bit
// registers.
//
//go:noescape
func chunkSums1(dst, p *byte, chunks int, k *[24]uint64)

// chunkSumsCRC3 writes the big-endian CRC32C of each of the chunks
// 512-byte chunks at p to dst (chunks*4 bytes), three at a time.
//
//go:noescape
func chunkSumsCRC3(dst, p *byte, chunks int)

// cpuid is the CPUID instruction's answer for leaf and sub-leaf sub.
func cpuid(leaf, sub uint32) (eax, ebx, ecx, edx uint32)

// appendGroupSums appends the sums of what data's leading chunks the
// machine's fold covers (whole groups of four with AVX-512, every whole
// chunk otherwise) to dst and returns the data it did not cover.
func appendGroupSums(dst, data []byte) ([]byte, []byte) {
	chunks := 0
	switch fold {
	case fold512:
		chunks = len(data) / groupBytes * 4
	case fold256, fold128, crc3:
		chunks = len(data) / protocol.BytesPerChecksum
	}
	if chunks == 0 {
		return dst, data
	}
	n := len(dst)
	dst = slices.Grow(dst, chunks*protocol.ChecksumSize)[:n+chunks*protocol.ChecksumSize]
	switch fold {
	case fold512:
		chunkSums4(&dst[n], &data[0], chunks/4, &foldConsts)
	case fold256:
		if pairs := chunks / 2; pairs > 0 {
			chunkSums2(&dst[n], &data[0], pairs, &foldConsts)
		}
		if chunks%2 == 1 {
			last := chunks - 1
			chunkSums1(&dst[n+last*protocol.ChecksumSize], &data[last*protocol.BytesPerChecksum], 1, &foldConsts)
		}
	case fold128:
		chunkSums1(&dst[n], &data[0], chunks, &foldConsts)
	case crc3:
		chunkSumsCRC3(&dst[n], &data[0], chunks)
	}
	return dst, data[chunks*protocol.BytesPerChecksum:]
}
