//! Content addresses: every object in the store is named by the blake3 hash of its bytes.

use std::fmt;
use std::io::{self, Read};
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A blake3 hash, written as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash([u8; 32]);

impl Hash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Hash {
        Hash(*blake3::hash(bytes).as_bytes())
    }

    /// Hashes everything `reader` yields; returns the hash and the number of bytes read.
    pub fn of_reader(reader: impl Read) -> io::Result<(Hash, u64)> {
        let mut hashing = HashingReader::new(reader);
        // 64 KiB at a time, not `io::copy`'s 8 KiB: blake3 hashes up to 16 chunks of 1 KiB at once only
        // when handed that many, and a large output takes an eighth of the reads.
        io::copy(&mut io::BufReader::with_capacity(1 << 16, &mut hashing), &mut io::sink())?;
        Ok(hashing.finish())
    }

    /// Hashes the file at `path`; returns the hash and its size.
    pub fn of_file(path: &Path) -> io::Result<(Hash, u64)> {
        Hash::of_reader(std::fs::File::open(path)?)
    }

    /// The 64-digit lowercase hex form.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// The first 12 hex digits, for humans (like a short git hash).
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_owned()
    }
}

/// A reader that hashes and counts what passes through it, so bytes can be checked while they are copied.
pub struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
    count: u64,
}

impl<R> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> HashingReader<R> {
        HashingReader { inner, hasher: blake3::Hasher::new(), count: 0 }
    }

    /// The hash and length of everything read so far.
    pub fn finish(&self) -> (Hash, u64) {
        (Hash(*self.hasher.finalize().as_bytes()), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.short())
    }
}

/// A string that is not 64 lowercase hex digits.
#[derive(Debug, thiserror::Error)]
#[error("`{text}` is not a blake3 hash (64 lowercase hex digits)")]
pub struct ParseHashError {
    text: String,
}

impl FromStr for Hash {
    type Err = ParseHashError;

    fn from_str(text: &str) -> Result<Hash, ParseHashError> {
        let error = || ParseHashError { text: text.chars().take(80).collect() };
        // Uppercase is refused so that one hash has exactly one spelling in keys and canonical forms.
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(error());
        }
        blake3::Hash::from_hex(text).map(|h| Hash(*h.as_bytes())).map_err(|_| error())
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Hash, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let hash = Hash::of(b"hello");
        assert_eq!(hash.to_hex().parse::<Hash>().unwrap(), hash);
        assert_eq!(hash.to_hex(), "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f");
    }

    #[test]
    fn refuses_uppercase_short_and_non_hex() {
        let hex = Hash::of(b"x").to_hex();
        assert!(hex.to_uppercase().parse::<Hash>().is_err());
        assert!(hex[..63].parse::<Hash>().is_err());
        assert!(format!("{}g", &hex[..63]).parse::<Hash>().is_err());
    }

    #[test]
    fn reader_counts_bytes() {
        let (hash, size) = Hash::of_reader(&b"0123456789"[..]).unwrap();
        assert_eq!((hash, size), (Hash::of(b"0123456789"), 10));
    }
}
