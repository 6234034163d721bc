package archive

// CRC-32 (IEEE, as gzip uses it) of a concatenation from the CRCs of its pieces, by the GF(2) matrix
// method of zlib's crc32_combine: appending len2 bytes to a message maps its CRC through a linear
// operator, the len2-th power of the operator for one zero byte, built here by repeated squaring.

// gf2Matrix is a linear map on 32-bit vectors over GF(2): m[i] is the image of bit i.
type gf2Matrix [32]uint32

// times returns m applied to vec.
func (m *gf2Matrix) times(vec uint32) uint32 {
	var sum uint32
	for i := 0; vec != 0; i, vec = i+1, vec>>1 {
		if vec&1 != 0 {
			sum ^= m[i]
		}
	}
	return sum
}

// mul returns the composition m∘n (n applied first).
func (m *gf2Matrix) mul(n *gf2Matrix) gf2Matrix {
	var r gf2Matrix
	for i := range n {
		r[i] = m.times(n[i])
	}
	return r
}

// crc32ZerosOp returns the operator that advances a CRC-32 register over n zero bytes (the identity
// for n <= 0).
func crc32ZerosOp(n int64) gf2Matrix {
	var op, step gf2Matrix
	row := uint32(1)
	for i := range op {
		op[i] = row // identity
		row <<= 1
	}
	// step starts as the operator for one zero bit: a shift, folding in the polynomial.
	step[0] = 0xedb88320
	row = 1
	for i := 1; i < 32; i++ {
		step[i] = row
		row <<= 1
	}
	for range 3 { // one zero byte
		step = step.mul(&step)
	}
	for ; n > 0; n >>= 1 {
		if n&1 != 0 {
			op = step.mul(&op)
		}
		if n > 1 {
			step = step.mul(&step)
		}
	}
	return op
}

// crc32Combine returns the CRC-32 of A followed by B, given crc1 = CRC-32(A), crc2 = CRC-32(B) and
// len2 = len(B), like zlib's crc32_combine.
func crc32Combine(crc1, crc2 uint32, len2 int64) uint32 {
	op := crc32ZerosOp(len2)
	return op.times(crc1) ^ crc2
}

// crcChain accumulates the CRC-32 and length of pieces appended in order. Operators are cached by
// length: most blocks of an archive hold exactly ChunkSize bytes.
type crcChain struct {
	crc uint32
	n   int64
	ops map[int64]*gf2Matrix
}

func (c *crcChain) add(crc uint32, n int64) {
	if n <= 0 {
		return
	}
	op, ok := c.ops[n]
	if !ok {
		m := crc32ZerosOp(n)
		op = &m
		if c.ops == nil {
			c.ops = map[int64]*gf2Matrix{}
		}
		c.ops[n] = op
	}
	c.crc = op.times(c.crc) ^ crc
	c.n += n
}
