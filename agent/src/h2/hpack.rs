//! HPACK (RFC 7541): decodes the header blocks of one direction of a connection, in
//! order, into borrowed name and value slices. One [`Decoder`] per direction; the
//! session hands it every complete header block, followed or not, so that its dynamic
//! table stays in step with the peer's encoder.
//!
//! Why hand-written: the maintained crates decode correctly, but `loona-hpack` rebuilds
//! its Huffman decoding table (a map of maps) for every Huffman-coded string, which was
//! 57.5% of the agent's CPU on HTTP/2 traffic, and the `h2` crate's decoder is private
//! to that crate. HPACK is small and fully specified; decoding it fast takes a Huffman
//! table built once and no allocation per field, which is what this module is.
//!
//! How. The Huffman code (Appendix B) is turned at compile time into a state machine
//! that reads four bits at a time: a state is an internal node of the code's tree (256
//! of them for 257 symbols), and a nibble emits at most one symbol, since no code is
//! shorter than five bits. A string sent raw reaches the callback as a slice of the
//! block; a Huffman-coded one is decoded into a scratch buffer the decoder keeps. The
//! dynamic table keeps every entry's name and value in one buffer, oldest first:
//! evicting an entry only drops its record, and the dead bytes are dropped once they
//! outweigh the live ones, so the buffer stays under three times the table's size.
//!
//! Strictness. Whatever RFC 7541 calls a decoding error is one here: an index of 0 or
//! past the table, a string or integer running past the block, an integer over 32
//! bits, a size update after a field or above what the caller allows, and Huffman
//! strings holding EOS or padded with more than 7 bits or with anything but ones
//! (§5.2). After an error the table is unknown (the peer's next blocks were encoded
//! against a table this decoder did not build), so the decoder refuses every later
//! block.

use std::collections::VecDeque;

/// Dynamic table size before any size update: the initial value of
/// SETTINGS_HEADER_TABLE_SIZE (RFC 9113 §6.5.2).
pub const DEFAULT_TABLE_SIZE: usize = 4096;
/// What an entry costs in the table's size beyond its name and value (RFC 7541 §4.1).
const ENTRY_OVERHEAD: usize = 32;
/// Scratch capacity kept from one block to the next; more (a block with a huge
/// Huffman-coded value) is given back after the block.
const SCRATCH_KEEP: usize = 8 * 1024;

/// Why a header block could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("header block ends inside a field")]
    Truncated,
    #[error("integer over 32 bits")]
    IntegerOverflow,
    #[error("table index {0} out of range")]
    BadIndex(u32),
    #[error("dynamic table size update after a field")]
    LateSizeUpdate,
    #[error("dynamic table size update to {0} bytes, above the allowed maximum")]
    TableSizeTooLarge(u32),
    #[error("huffman-coded string holds EOS")]
    HuffmanEos,
    #[error("huffman padding longer than 7 bits")]
    HuffmanPaddingTooLong,
    #[error("huffman padding not all ones")]
    HuffmanPaddingNotOnes,
    #[error("an earlier header block failed to decode: table unknown")]
    Poisoned,
}

/// The HPACK decoding state of one direction of a connection.
#[derive(Clone, Debug)]
pub struct Decoder {
    table: Table,
    /// Largest table size a size update may ask for.
    max_allowed: usize,
    /// Huffman-decoded name and value of the current field.
    scratch: Vec<u8>,
    /// A block failed: the table is unknown.
    failed: bool,
}

impl Decoder {
    /// A decoder whose table starts at [`DEFAULT_TABLE_SIZE`] and that rejects size
    /// updates above `max_allowed` bytes (which bounds the table's memory).
    pub fn new(max_allowed: usize) -> Self {
        Self {
            table: Table::new(DEFAULT_TABLE_SIZE),
            max_allowed,
            scratch: Vec::new(),
            failed: false,
        }
    }

    /// Decodes one complete header block, calling `field` with each name and value in
    /// order. On an error the fields before it have been handed out, and the decoder
    /// refuses every later block ([`Error::Poisoned`]).
    pub fn decode(
        &mut self,
        block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), Error> {
        if self.failed {
            return Err(Error::Poisoned);
        }
        let res = self.fields(block, &mut field);
        self.failed = res.is_err();
        self.scratch.clear();
        self.scratch.shrink_to(SCRATCH_KEEP);
        res
    }

    fn fields(&mut self, block: &[u8], field: &mut impl FnMut(&[u8], &[u8])) -> Result<(), Error> {
        let mut rest = block;
        let mut started = false;
        while let Some(&first) = rest.first() {
            match first {
                // Indexed (§6.1).
                0x80..=0xff => {
                    let index = integer(&mut rest, 7)?;
                    let (name, value) = self.lookup(index)?;
                    field(name, value);
                }
                // Literal with incremental indexing (§6.2.1).
                0x40..=0x7f => self.literal(&mut rest, 6, true, field)?,
                // Dynamic table size update (§6.3): only before the first field (§4.2).
                0x20..=0x3f => {
                    if started {
                        return Err(Error::LateSizeUpdate);
                    }
                    let size = integer(&mut rest, 5)?;
                    if size as usize > self.max_allowed {
                        return Err(Error::TableSizeTooLarge(size));
                    }
                    self.table.set_max_size(size as usize);
                    continue;
                }
                // Literal without indexing (0000) and never indexed (0001, §6.2.2-3):
                // the same to a decoder that does not re-encode.
                0x00..=0x1f => self.literal(&mut rest, 4, false, field)?,
            }
            started = true;
        }
        Ok(())
    }

    /// The entry at `index` of the static and dynamic tables' joint index space
    /// (§2.3.3): 1 to 61 static, then the dynamic table, newest first.
    fn lookup(&self, index: u32) -> Result<(&[u8], &[u8]), Error> {
        let i = (index as usize)
            .checked_sub(1)
            .ok_or(Error::BadIndex(index))?;
        if let Some(&(name, value)) = STATIC.get(i) {
            return Ok((name, value));
        }
        self.table
            .get(i - STATIC.len())
            .ok_or(Error::BadIndex(index))
    }

    /// A literal field whose first byte has a `prefix`-bit name index (0: a literal
    /// name follows); `index`: it goes into the dynamic table.
    fn literal(
        &mut self,
        rest: &mut &[u8],
        prefix: u8,
        index: bool,
        field: &mut impl FnMut(&[u8], &[u8]),
    ) -> Result<(), Error> {
        let name_index = integer(rest, prefix)?;
        self.scratch.clear();
        let name = match (name_index as usize).checked_sub(1) {
            None => match string(rest, &mut self.scratch)? {
                Str::Raw(s) => Name::Bytes(s),
                Str::Huffman => Name::Scratch,
            },
            Some(i) => match STATIC.get(i) {
                Some(&(n, _)) => Name::Bytes(n),
                None => {
                    let d = i - STATIC.len();
                    if d >= self.table.len() {
                        return Err(Error::BadIndex(name_index));
                    }
                    Name::Entry(d)
                }
            },
        };
        let name_end = self.scratch.len();
        let value = string(rest, &mut self.scratch)?;
        // The scratch only grew since `name_end` was taken.
        let (scratch_name, scratch_value) = self.scratch.split_at(name_end);
        let value = match value {
            Str::Raw(s) => s,
            Str::Huffman => scratch_value,
        };
        let name_bytes = match name {
            Name::Bytes(s) => s,
            Name::Scratch => scratch_name,
            Name::Entry(d) => self.table.get(d).map_or(&[][..], |(n, _)| n),
        };
        field(name_bytes, value);
        if index {
            let name = match name {
                Name::Bytes(s) => NameRef::Bytes(s),
                Name::Scratch => NameRef::Bytes(scratch_name),
                Name::Entry(d) => NameRef::Entry(d),
            };
            self.table.insert(name, value);
        }
        Ok(())
    }
}

/// Where a literal field's name is.
enum Name<'a> {
    /// In the static table or the block.
    Bytes(&'a [u8]),
    /// Huffman-decoded, at the start of the scratch buffer.
    Scratch,
    /// The name of dynamic table entry `d` (0: the newest).
    Entry(usize),
}

/// A decoded string: a slice of the block, or appended to the scratch buffer.
enum Str<'a> {
    Raw(&'a [u8]),
    Huffman,
}

/// An integer with an `n`-bit prefix (§5.1) at the start of `rest`, which is advanced
/// past it. Values over `u32::MAX` are errors, and so are encodings longer than the
/// five continuation bytes the largest `u32` needs (zero bytes could go on forever).
fn integer(rest: &mut &[u8], n: u8) -> Result<u32, Error> {
    let (&first, mut tail) = rest.split_first().ok_or(Error::Truncated)?;
    let max = (1u32 << n) - 1;
    let mut value = u64::from(u32::from(first) & max);
    if value == u64::from(max) {
        let mut shift = 0;
        loop {
            let (&b, t) = tail.split_first().ok_or(Error::Truncated)?;
            tail = t;
            value += u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 28 {
                return Err(Error::IntegerOverflow);
            }
        }
    }
    *rest = tail;
    u32::try_from(value).map_err(|_| Error::IntegerOverflow)
}

/// A string literal (§5.2) at the start of `rest`, which is advanced past it.
/// Huffman-coded strings are decoded onto the end of `scratch`.
fn string<'a>(rest: &mut &'a [u8], scratch: &mut Vec<u8>) -> Result<Str<'a>, Error> {
    let huffman = rest.first().is_some_and(|&b| b & 0x80 != 0);
    let len = integer(rest, 7)? as usize;
    let (s, tail) = rest.split_at_checked(len).ok_or(Error::Truncated)?;
    *rest = tail;
    if huffman {
        huffman_decode(s, scratch)?;
        Ok(Str::Huffman)
    } else {
        Ok(Str::Raw(s))
    }
}

/// Decodes the Huffman-coded `src` onto the end of `out`.
fn huffman_decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    // At most one symbol per five bits.
    out.reserve(src.len() / 5 * 8 + 8);
    let mut state = 0u8;
    let mut seen = 0u8;
    for &b in src {
        for nibble in [b >> 4, b & 0xf] {
            let step = HUFFMAN.steps[usize::from(state)][usize::from(nibble)];
            if step.flags & EMIT != 0 {
                out.push(step.sym);
            }
            // EOS is checked once at the end: after it the machine goes on from
            // the root, and what it emits is dropped with the error.
            seen |= step.flags;
            state = step.next;
        }
    }
    if seen & EOS != 0 {
        return Err(Error::HuffmanEos);
    }
    match HUFFMAN.end[usize::from(state)] {
        Padding::Ok => Ok(()),
        Padding::TooLong => Err(Error::HuffmanPaddingTooLong),
        Padding::NotOnes => Err(Error::HuffmanPaddingNotOnes),
    }
}

/// The dynamic table (§2.3.2, §4).
#[derive(Clone, Debug)]
struct Table {
    /// Names and values of the entries, oldest first, each name followed by its value;
    /// the bytes before the oldest entry belong to evicted ones.
    bytes: Vec<u8>,
    /// Oldest at the front.
    entries: VecDeque<Entry>,
    /// Size as §4.1 counts it: name, value and 32 bytes per entry.
    size: usize,
    max_size: usize,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Offset of the name in `bytes`.
    at: usize,
    name_len: usize,
    value_len: usize,
}

impl Entry {
    fn size(&self) -> usize {
        self.name_len + self.value_len + ENTRY_OVERHEAD
    }
}

/// The name of an entry being added.
enum NameRef<'a> {
    Bytes(&'a [u8]),
    /// The name of entry `d` (0: the newest), which adding may evict (§4.4).
    Entry(usize),
}

impl Table {
    fn new(max_size: usize) -> Self {
        Self {
            bytes: Vec::new(),
            entries: VecDeque::new(),
            size: 0,
            max_size,
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    /// The record of entry `d`, counting from the newest (0).
    fn entry(&self, d: usize) -> Option<&Entry> {
        self.entries.get(self.entries.len().checked_sub(d + 1)?)
    }

    /// Entry `d`'s name and value, counting from the newest (0).
    fn get(&self, d: usize) -> Option<(&[u8], &[u8])> {
        let e = self.entry(d)?;
        let bytes = self.bytes.get(e.at..e.at + e.name_len + e.value_len)?;
        Some(bytes.split_at(e.name_len))
    }

    fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
        // A smaller table is usually asked for to save memory: give it back.
        self.compact();
        self.bytes.shrink_to(max_size.saturating_mul(2));
    }

    fn insert(&mut self, name: NameRef<'_>, value: &[u8]) {
        let name_len = match name {
            NameRef::Bytes(s) => s.len(),
            NameRef::Entry(d) => self.get(d).map_or(0, |(n, _)| n.len()),
        };
        let size = name_len
            .saturating_add(value.len())
            .saturating_add(ENTRY_OVERHEAD);
        if size > self.max_size {
            // §4.4: an entry larger than the table empties it and is not added.
            self.entries.clear();
            self.bytes.clear();
            self.size = 0;
            return;
        }
        // Dead bytes go before evicting: the name may be that of an entry this
        // insertion evicts, whose bytes must survive until copied.
        if self.dead() >= self.bytes.len() - self.dead() {
            self.compact();
        }
        let from = match name {
            NameRef::Bytes(_) => None,
            NameRef::Entry(d) => self.entry(d).map(|e| e.at..e.at + e.name_len),
        };
        self.evict_to(self.max_size - size);
        let at = self.bytes.len();
        match (name, from) {
            (NameRef::Bytes(s), _) => self.bytes.extend_from_slice(s),
            (NameRef::Entry(_), Some(r)) => self.bytes.extend_from_within(r),
            (NameRef::Entry(_), None) => {}
        }
        self.bytes.extend_from_slice(value);
        self.entries.push_back(Entry {
            at,
            name_len: self.bytes.len() - at - value.len(),
            value_len: value.len(),
        });
        self.size += size;
    }

    /// Evicts the oldest entries until the size is at most `limit`.
    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            let Some(e) = self.entries.pop_front() else {
                break;
            };
            self.size -= e.size();
        }
    }

    /// Bytes before the oldest entry (those of evicted entries).
    fn dead(&self) -> usize {
        self.entries.front().map_or(self.bytes.len(), |e| e.at)
    }

    fn compact(&mut self) {
        let dead = self.dead();
        if dead == 0 {
            return;
        }
        self.bytes.drain(..dead);
        for e in &mut self.entries {
            e.at -= dead;
        }
    }
}

/// The static table (RFC 7541 Appendix A): index 1 is the first entry.
static STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// The Huffman code (RFC 7541 Appendix B): symbol i's code, right-aligned, and its
/// length in bits. Symbol 256 is EOS.
const CODES: [(u32, u8); 257] = [
    // 0-31: control characters.
    (0x1ff8, 13),
    (0x7fffd8, 23),
    (0xfffffe2, 28),
    (0xfffffe3, 28),
    (0xfffffe4, 28),
    (0xfffffe5, 28),
    (0xfffffe6, 28),
    (0xfffffe7, 28),
    (0xfffffe8, 28),
    (0xffffea, 24),
    (0x3ffffffc, 30),
    (0xfffffe9, 28),
    (0xfffffea, 28),
    (0x3ffffffd, 30),
    (0xfffffeb, 28),
    (0xfffffec, 28),
    (0xfffffed, 28),
    (0xfffffee, 28),
    (0xfffffef, 28),
    (0xffffff0, 28),
    (0xffffff1, 28),
    (0xffffff2, 28),
    (0x3ffffffe, 30),
    (0xffffff3, 28),
    (0xffffff4, 28),
    (0xffffff5, 28),
    (0xffffff6, 28),
    (0xffffff7, 28),
    (0xffffff8, 28),
    (0xffffff9, 28),
    (0xffffffa, 28),
    (0xffffffb, 28),
    // 32-47: ' ' to '/'.
    (0x14, 6),
    (0x3f8, 10),
    (0x3f9, 10),
    (0xffa, 12),
    (0x1ff9, 13),
    (0x15, 6),
    (0xf8, 8),
    (0x7fa, 11),
    (0x3fa, 10),
    (0x3fb, 10),
    (0xf9, 8),
    (0x7fb, 11),
    (0xfa, 8),
    (0x16, 6),
    (0x17, 6),
    (0x18, 6),
    // 48-57: '0' to '9'.
    (0x0, 5),
    (0x1, 5),
    (0x2, 5),
    (0x19, 6),
    (0x1a, 6),
    (0x1b, 6),
    (0x1c, 6),
    (0x1d, 6),
    (0x1e, 6),
    (0x1f, 6),
    // 58-64: ':' to '@'.
    (0x5c, 7),
    (0xfb, 8),
    (0x7ffc, 15),
    (0x20, 6),
    (0xffb, 12),
    (0x3fc, 10),
    (0x1ffa, 13),
    // 65-90: 'A' to 'Z'.
    (0x21, 6),
    (0x5d, 7),
    (0x5e, 7),
    (0x5f, 7),
    (0x60, 7),
    (0x61, 7),
    (0x62, 7),
    (0x63, 7),
    (0x64, 7),
    (0x65, 7),
    (0x66, 7),
    (0x67, 7),
    (0x68, 7),
    (0x69, 7),
    (0x6a, 7),
    (0x6b, 7),
    (0x6c, 7),
    (0x6d, 7),
    (0x6e, 7),
    (0x6f, 7),
    (0x70, 7),
    (0x71, 7),
    (0x72, 7),
    (0xfc, 8),
    (0x73, 7),
    (0xfd, 8),
    // 91-96: '[' to '`'.
    (0x1ffb, 13),
    (0x7fff0, 19),
    (0x1ffc, 13),
    (0x3ffc, 14),
    (0x22, 6),
    (0x7ffd, 15),
    // 97-122: 'a' to 'z'.
    (0x3, 5),
    (0x23, 6),
    (0x4, 5),
    (0x24, 6),
    (0x5, 5),
    (0x25, 6),
    (0x26, 6),
    (0x27, 6),
    (0x6, 5),
    (0x74, 7),
    (0x75, 7),
    (0x28, 6),
    (0x29, 6),
    (0x2a, 6),
    (0x7, 5),
    (0x2b, 6),
    (0x76, 7),
    (0x2c, 6),
    (0x8, 5),
    (0x9, 5),
    (0x2d, 6),
    (0x77, 7),
    (0x78, 7),
    (0x79, 7),
    (0x7a, 7),
    (0x7b, 7),
    // 123-127: '{' to DEL.
    (0x7ffe, 15),
    (0x7fc, 11),
    (0x3ffd, 14),
    (0x1ffd, 13),
    (0xffffffc, 28),
    // 128-255.
    (0xfffe6, 20),
    (0x3fffd2, 22),
    (0xfffe7, 20),
    (0xfffe8, 20),
    (0x3fffd3, 22),
    (0x3fffd4, 22),
    (0x3fffd5, 22),
    (0x7fffd9, 23),
    (0x3fffd6, 22),
    (0x7fffda, 23),
    (0x7fffdb, 23),
    (0x7fffdc, 23),
    (0x7fffdd, 23),
    (0x7fffde, 23),
    (0xffffeb, 24),
    (0x7fffdf, 23),
    (0xffffec, 24),
    (0xffffed, 24),
    (0x3fffd7, 22),
    (0x7fffe0, 23),
    (0xffffee, 24),
    (0x7fffe1, 23),
    (0x7fffe2, 23),
    (0x7fffe3, 23),
    (0x7fffe4, 23),
    (0x1fffdc, 21),
    (0x3fffd8, 22),
    (0x7fffe5, 23),
    (0x3fffd9, 22),
    (0x7fffe6, 23),
    (0x7fffe7, 23),
    (0xffffef, 24),
    (0x3fffda, 22),
    (0x1fffdd, 21),
    (0xfffe9, 20),
    (0x3fffdb, 22),
    (0x3fffdc, 22),
    (0x7fffe8, 23),
    (0x7fffe9, 23),
    (0x1fffde, 21),
    (0x7fffea, 23),
    (0x3fffdd, 22),
    (0x3fffde, 22),
    (0xfffff0, 24),
    (0x1fffdf, 21),
    (0x3fffdf, 22),
    (0x7fffeb, 23),
    (0x7fffec, 23),
    (0x1fffe0, 21),
    (0x1fffe1, 21),
    (0x3fffe0, 22),
    (0x1fffe2, 21),
    (0x7fffed, 23),
    (0x3fffe1, 22),
    (0x7fffee, 23),
    (0x7fffef, 23),
    (0xfffea, 20),
    (0x3fffe2, 22),
    (0x3fffe3, 22),
    (0x3fffe4, 22),
    (0x7ffff0, 23),
    (0x3fffe5, 22),
    (0x3fffe6, 22),
    (0x7ffff1, 23),
    (0x3ffffe0, 26),
    (0x3ffffe1, 26),
    (0xfffeb, 20),
    (0x7fff1, 19),
    (0x3fffe7, 22),
    (0x7ffff2, 23),
    (0x3fffe8, 22),
    (0x1ffffec, 25),
    (0x3ffffe2, 26),
    (0x3ffffe3, 26),
    (0x3ffffe4, 26),
    (0x7ffffde, 27),
    (0x7ffffdf, 27),
    (0x3ffffe5, 26),
    (0xfffff1, 24),
    (0x1ffffed, 25),
    (0x7fff2, 19),
    (0x1fffe3, 21),
    (0x3ffffe6, 26),
    (0x7ffffe0, 27),
    (0x7ffffe1, 27),
    (0x3ffffe7, 26),
    (0x7ffffe2, 27),
    (0xfffff2, 24),
    (0x1fffe4, 21),
    (0x1fffe5, 21),
    (0x3ffffe8, 26),
    (0x3ffffe9, 26),
    (0xffffffd, 28),
    (0x7ffffe3, 27),
    (0x7ffffe4, 27),
    (0x7ffffe5, 27),
    (0xfffec, 20),
    (0xfffff3, 24),
    (0xfffed, 20),
    (0x1fffe6, 21),
    (0x3fffe9, 22),
    (0x1fffe7, 21),
    (0x1fffe8, 21),
    (0x7ffff3, 23),
    (0x3fffea, 22),
    (0x3fffeb, 22),
    (0x1ffffee, 25),
    (0x1ffffef, 25),
    (0xfffff4, 24),
    (0xfffff5, 24),
    (0x3ffffea, 26),
    (0x7ffff4, 23),
    (0x3ffffeb, 26),
    (0x7ffffe6, 27),
    (0x3ffffec, 26),
    (0x3ffffed, 26),
    (0x7ffffe7, 27),
    (0x7ffffe8, 27),
    (0x7ffffe9, 27),
    (0x7ffffea, 27),
    (0x7ffffeb, 27),
    (0xffffffe, 28),
    (0x7ffffec, 27),
    (0x7ffffed, 27),
    (0x7ffffee, 27),
    (0x7ffffef, 27),
    (0x7fffff0, 27),
    (0x3ffffee, 26),
    // 256: EOS.
    (0x3fffffff, 30),
];

/// `Step::flags`: the nibble completed a symbol, `sym`.
const EMIT: u8 = 1;
/// `Step::flags`: the nibble completed EOS.
const EOS: u8 = 2;

/// What one nibble does in one state.
#[derive(Clone, Copy, Debug)]
struct Step {
    /// The state after it.
    next: u8,
    sym: u8,
    flags: u8,
}

/// Whether a string may end in a state: the bits since the last symbol are its
/// padding, which must be a prefix of EOS (all ones) of at most 7 bits (§5.2).
#[derive(Clone, Copy, Debug)]
enum Padding {
    Ok,
    TooLong,
    NotOnes,
}

/// The nibble machine: `steps[state][nibble]`, and what ending in each state means.
struct Huffman {
    steps: [[Step; 16]; 256],
    end: [Padding; 256],
}

static HUFFMAN: Huffman = huffman();

/// Builds the nibble machine from [`CODES`]; compilation fails if the codes do not
/// form a complete prefix code (a transcription error would likely break that).
const fn huffman() -> Huffman {
    // The code's tree: node 0 is the root; a child is an internal node's number or
    // LEAF | symbol. 0 marks a missing child (the root is nobody's child).
    const LEAF: u16 = 0x8000;
    let mut kids = [[0u16; 2]; 256];
    // Depth of the nodes reached from the root by ones only (the prefixes of EOS).
    let mut ones = [u8::MAX; 256];
    ones[0] = 0;
    let mut nodes = 1usize;
    let mut sym = 0;
    while sym < CODES.len() {
        let (code, len) = CODES[sym];
        assert!(len >= 5 && len <= 30 && code >> len == 0, "bad code");
        let mut node = 0usize;
        let mut i = len - 1;
        while i > 0 {
            let bit = ((code >> i) & 1) as usize;
            if kids[node][bit] == 0 {
                assert!(nodes < 256, "more than 256 internal nodes");
                kids[node][bit] = nodes as u16;
                if bit == 1 && ones[node] != u8::MAX {
                    ones[nodes] = ones[node] + 1;
                }
                nodes += 1;
            }
            assert!(kids[node][bit] & LEAF == 0, "a code is a prefix of another");
            node = kids[node][bit] as usize;
            i -= 1;
        }
        let bit = (code & 1) as usize;
        assert!(kids[node][bit] == 0, "a code is a prefix of another");
        kids[node][bit] = LEAF | sym as u16;
        sym += 1;
    }
    assert!(nodes == 256, "not a complete code");

    let empty = Step {
        next: 0,
        sym: 0,
        flags: 0,
    };
    let mut steps = [[empty; 16]; 256];
    let mut end = [Padding::NotOnes; 256];
    let mut state = 0;
    while state < 256 {
        let mut nibble = 0;
        while nibble < 16 {
            let mut node = state;
            let mut step = empty;
            let mut i = 4;
            while i > 0 {
                i -= 1;
                let kid = kids[node][(nibble >> i) & 1];
                assert!(kid != 0, "not a complete code");
                if kid & LEAF == 0 {
                    node = kid as usize;
                    continue;
                }
                // No code is shorter than 5 bits: one symbol per nibble at most.
                assert!(step.flags == 0, "two symbols in a nibble");
                let sym = kid & !LEAF;
                if sym == 256 {
                    step.flags = EOS;
                } else {
                    step.flags = EMIT;
                    step.sym = sym as u8;
                }
                node = 0;
            }
            step.next = node as u8;
            steps[state][nibble] = step;
            nibble += 1;
        }
        end[state] = match ones[state] {
            0..=7 => Padding::Ok,
            u8::MAX => Padding::NotOnes,
            _ => Padding::TooLong,
        };
        state += 1;
    }
    Huffman { steps, end }
}

#[cfg(test)]
mod tests;
