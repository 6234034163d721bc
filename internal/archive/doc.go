// Package archive owns the snapshot archive format (docs/archive-format.md): a gzip-compressed tar holding
// `.metadata`, `db/db.backup` (a pg_dump custom-format dump) and `tree/xx/yy/<uuid>` file documents.
// It writes archives in one streaming pass ([Builder]) and reads and validates them ([Inspect]). It
// talks to neither Azure nor PostgreSQL: the builder stages blocks through [BlockSink], which the blob
// adapter implements with Azure Stage Block and Put Block List.
//
// # Writing: one pass, blocks committed out of order
//
// A tar header needs an entry's size before its data, and pg_dump's output size is known only when it
// ends. The builder does not spool to disk; it relies on two facts:
//
//   - deflate blocks that end on a byte boundary concatenate into one deflate stream: a chunk compressed
//     with a fresh window and ended by a sync flush (an empty stored block) can go anywhere in it;
//   - an Azure block blob is the list of blocks given at commit, in that order, whatever the order in
//     which the blocks were staged.
//
// The tar stream is cut into chunks of [Options.ChunkSize] uncompressed bytes; each chunk is deflated on
// its own and staged as one block. The blob is one gzip member, as pigz writes it: the 10-byte gzip
// header opens the first block, and a last block of 10 bytes closes the member with an empty final
// deflate block and the trailer (the CRC-32 and length mod 2^32 of the whole tar). The compressors take
// each chunk's CRC-32; Finish combines them in commit order (crc32Combine, zlib's method). Readers that
// stop after one member (Python's tarfile streaming with "r|gz", Commons Compress by default) read the
// whole archive. Blocks belong to streams, committed in this order:
//
//	h  head: the .metadata entry and the db/db.backup tar header, staged by Finish (dump size known)
//	d  the dump's bytes and the padding to 512, staged while WriteDatabase reads (or the spliced
//	   deflate bytes of a dump blob, then the padding as a segment of its own)
//	f  one stream per large file (header, data, padding), in the order the files complete
//	t  the small files (header, data, padding each), then the end-of-archive marker
//	z  the end of the gzip member, staged by Finish once every other block is compressed
//
// A block ID is base64 of a 12-byte string naming the stream and a global sequence number, for example
// base64("d-0000000042"), so all IDs of a blob have the same length as Azure requires. A blob holds at
// most 50,000 committed blocks; a build that needs more fails before committing and names
// Options.ChunkSize as the option to raise (4 MiB chunks allow about 195 GiB of uncompressed tar).
//
// Deflate looks back 32 KiB, so starting with an empty window every few MiB costs very little: the
// archive is within 1% of one gzip stream of the same tar at the same level (asserted in the tests).
//
// # Parallelism and memory
//
// WriteDatabase and AddFile fill chunk buffers; Options.Concurrency goroutines compress full chunks with
// klauspost/compress/flate; Options.Uploads goroutines stage the compressed blocks. Buffers come from two
// fixed-size pools, so a slow sink or a slow compressor blocks the producers (back-pressure) instead of
// growing memory. WriteCompressedDatabase reads its already compressed bytes straight into the
// compressed-block buffers, taking each block's MD5 there, and bypasses the compressors. Worst-case
// bytes held by a builder, with C = Concurrency, U = Uploads, S = ChunkSize:
//
//	input chunk buffers     (C + 2) × S
//	compressed blocks       (C + U) × (S + S/64 + 1 KiB)
//	deflate encoder state   C × 1 to 1.5 MiB
//	small files read ahead  S/4 per goroutine concurrently inside AddFile
//
// With the defaults on a 2-core worker (C = 2, U = 4, S = 4 MiB) that is about 42 MiB plus 1 MiB per
// concurrent AddFile, whatever the sizes of the database and the files.
//
// The default compression level is 6, the smallest output among klauspost's fast levels (1 to 6) at
// nearly the speed of level 1: about 100 MB/s per core, 3.5 times compress/gzip's default level. Its
// output relative to zlib's level 6 (what `tar czf` and pg_dump -Fc use) depends on the data: 1.02 × on
// Go source code, 1.09 × on table-like text full of UUIDs and numbers. Level 7 narrows that to 1.06 ×
// at half the speed; levels 8 and 9 match zlib at a fifth of the speed. Set Options.Level accordingly.
//
// Each block's MD5 is taken as it is compressed and handed to the sink with it; [Result.Blocks] lists
// the committed blocks with their sizes and digests, and [VerifyBlob] checks a blob read back against
// them, yielding its SHA-256.
//
// # Dump blobs and splicing
//
// An incremental snapshot stores its database dump as a blob of its own, and a Mendix archive is
// assembled from it later. [DumpWriter] (or [WriteCompressed]) writes that blob with the same streams,
// pools and goroutines as the builder: one stream of dump blocks, the first opening with the gzip
// header, then the trailer block with the dump's CRC-32 and length. The blob is one standard gzip
// member of exactly the dump (an empty dump gives the 20-byte empty member); [CompressedResult.Blocks]
// serves VerifyBlob as Result.Blocks does.
//
// [Builder.WriteCompressedDatabase] stages the blob's bytes between its 10-byte header and its 10-byte
// trailer verbatim, neither inflated nor recompressed, where the dump's blocks go, in blocks of at
// most ChunkSize bytes, then the entry's padding as a small segment of its own. This is valid because
// those bytes are a run of segments each deflated with a fresh window and ended by a sync flush: every
// segment is non-final and ends on a byte boundary, and back-references reach only within the segment,
// so within the dump. Put after the head, the run inflates to exactly the dump, and decoding goes on
// with the padding. The cuts between blocks may fall anywhere inside a segment: a blob is the
// concatenation of its blocks. For the archive's trailer, the dump's CRC-32 and length, from the dump
// blob's trailer, enter the CRC-32 chain at the dump's position as one piece.
//
// The builder trusts the body and the CRC-32 it is given. [CheckGzipHeader], [ParseGzipTrailer] and
// the sync flush required at the end of the body catch a blob from another writer or cut short; only
// VerifyBlob against the dump blob's blocks proves it is the blob DumpWriter committed. A wrong CRC-32
// or dump size is not detected here: the archive's gzip trailer then disagrees with its content, and
// gzip readers reject it.
//
// # Reading
//
// [Inspect] streams an archive through gzip and tar once, checks it against docs/archive-format.md and
// [Limits], computes its SHA-256 and hands db/db.backup and each file to a callback. Every rejection is
// a *backup.Error with code backup.CodeInvalidParameters and a message meant for the user.
package archive
