package archive

import (
	"fmt"
	"hash/crc32"
	"testing"
)

func TestCRC32Combine(t *testing.T) {
	data := make([]byte, 3<<20+17)
	fillRandom(data, 21)
	// Cut points: empty pieces at either end and in the middle, one byte, odd and power-of-two lengths.
	for _, cut := range []int{0, 1, 2, 7, 8, 255, 4096, 65537, 1 << 20, 3<<20 + 16, len(data)} {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			a, b := data[:cut], data[cut:]
			got := crc32Combine(crc32.ChecksumIEEE(a), crc32.ChecksumIEEE(b), int64(len(b)))
			if want := crc32.ChecksumIEEE(data); got != want {
				t.Errorf("crc32Combine of %d + %d bytes = %08x, want %08x", len(a), len(b), got, want)
			}
		})
	}
	t.Run("zero-length second piece", func(t *testing.T) {
		c := crc32.ChecksumIEEE(data[:100])
		if got := crc32Combine(c, crc32.ChecksumIEEE(nil), 0); got != c {
			t.Errorf("crc32Combine(c, CRC of nothing, 0) = %08x, want c = %08x", got, c)
		}
	})
	t.Run("zeros", func(t *testing.T) {
		zeros := make([]byte, 16<<20)
		for _, n := range []int{1, 3, 1000, 16 << 20} {
			c := crc32.ChecksumIEEE(data[:10])
			got := crc32Combine(c, crc32.ChecksumIEEE(zeros[:n]), int64(n))
			if want := crc32.Update(c, crc32.IEEETable, zeros[:n]); got != want {
				t.Errorf("%d zero bytes: %08x, want %08x", n, got, want)
			}
		}
	})
}

// TestCRCChain: pieces of many lengths (zero-length ones and repeated lengths, which hit the operator
// cache) chained in order give the CRC-32 and length of their concatenation.
func TestCRCChain(t *testing.T) {
	data := make([]byte, 2<<20)
	fillText(data, 8)
	rng := newRand(3)
	var c crcChain
	for off := 0; off < len(data); {
		var n int
		switch rng.IntN(4) {
		case 0:
			n = 0
		case 1:
			n = 4096
		default:
			n = rng.IntN(100_000)
		}
		n = min(n, len(data)-off)
		c.add(crc32.ChecksumIEEE(data[off:off+n]), int64(n))
		off += n
	}
	if want := crc32.ChecksumIEEE(data); c.crc != want || c.n != int64(len(data)) {
		t.Errorf("chain: CRC %08x over %d bytes, want %08x over %d", c.crc, c.n, want, len(data))
	}
	var empty crcChain
	empty.add(0, 0)
	if empty.crc != 0 || empty.n != 0 {
		t.Errorf("chain of one empty piece: CRC %08x over %d bytes, want 0 over 0", empty.crc, empty.n)
	}
}
