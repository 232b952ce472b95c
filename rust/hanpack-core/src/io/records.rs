//! Records of line-oriented corpus files, as `hanpack.data.tokenize_files` reads them:
//! `.txt` has a document per line; `.jsonl` a JSON object per line whose string field
//! `field` is the document. A line ends at `\n` (a `\r` before it is dropped).
//!
//! One line in, one [`Record`] out: the document (borrowed from the line unless JSON
//! escapes had to be undone), or why the line is not one ([`SkipKind`]). JSON is strict
//! (RFC 8259, as `serde_json` parses it: no NaN, no comments); only the wanted field is
//! decoded, any other value is skipped unparsed into strings; a repeated key counts by its
//! last value, as in Python's `json`.

use std::borrow::Cow;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
#[cfg(unix)]
use std::os::unix::fs::FileExt;
#[cfg(windows)]
use std::os::windows::fs::FileExt;
use std::path::Path;

use rayon::prelude::*;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Why a line is not a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipKind {
    /// Nothing but the line end (counted, never an error).
    Empty,
    InvalidUtf8,
    InvalidJson,
    /// Not an object, or an object without the field.
    MissingField,
    /// The field holds something other than a string.
    NotText,
    /// A `\uD800`-style escape with no partner: no Unicode text.
    InvalidUnicode,
}

impl SkipKind {
    /// The name `hanpack.data` reports (`PROBLEM_KINDS`).
    pub fn name(self) -> &'static str {
        match self {
            SkipKind::Empty => "empty",
            SkipKind::InvalidUtf8 => "invalid_utf8",
            SkipKind::InvalidJson => "invalid_json",
            SkipKind::MissingField => "missing_field",
            SkipKind::NotText => "not_text",
            SkipKind::InvalidUnicode => "invalid_unicode",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Record<'a> {
    Document(Cow<'a, str>),
    Skip(SkipKind, String),
}

/// The record of one line (with or without its `\n`); `json_field` None: a text line.
pub fn line_record<'a>(line: &'a [u8], json_field: Option<&str>) -> Record<'a> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Record::Skip(SkipKind::Empty, "empty line".into());
    }
    // simdutf8 checks the lines several times faster than `std::str::from_utf8`, whose
    // byte loop was 7% of a two-core `tokenize_files` run on Chinese text (an eighth as
    // much as encoding); std then finds where an invalid line breaks.
    let text = match simdutf8::basic::from_utf8(line).or_else(|_| std::str::from_utf8(line)) {
        Ok(t) => t,
        Err(e) => {
            let at = e.valid_up_to();
            return Record::Skip(
                SkipKind::InvalidUtf8,
                format!("invalid UTF-8 at byte {at} of the line"),
            );
        }
    };
    match json_field {
        None => Record::Document(Cow::Borrowed(text)),
        Some(field) => json_document(text, field),
    }
}

fn json_document<'a>(text: &'a str, field: &str) -> Record<'a> {
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = Top { field }
        .deserialize(&mut de)
        .and_then(|f| de.end().map(|()| f));
    let found = match parsed {
        Ok(f) => f,
        Err(e) => {
            let message = e.to_string();
            // serde_json's two errors for a \uD800-style escape without its partner
            let lone = message.contains("surrogate") || message.contains("end of hex escape");
            let kind = if lone {
                SkipKind::InvalidUnicode
            } else {
                SkipKind::InvalidJson
            };
            return Record::Skip(kind, format!("not JSON: {message}"));
        }
    };
    match found {
        Found::Text(t) => Record::Document(t),
        Found::Missing => Record::Skip(
            SkipKind::MissingField,
            format!("an object without the field {field:?}"),
        ),
        Found::NotObject(what) => Record::Skip(
            SkipKind::MissingField,
            format!("a JSON {what}, not an object (no field {field:?})"),
        ),
        Found::Other(what) => Record::Skip(
            SkipKind::NotText,
            format!("field {field:?} is a JSON {what}, not a string"),
        ),
    }
}

/// What the top-level value says about the field.
enum Found<'a> {
    Text(Cow<'a, str>),
    Other(&'static str),
    Missing,
    NotObject(&'static str),
}

/// Visits the top-level value: an object is searched for the field.
struct Top<'f> {
    field: &'f str,
}

/// Visits the field's value: a string is kept (borrowed when it had no escapes).
struct FieldValue;

/// Compares an object key with the field without allocating.
struct KeyIs<'f>(&'f str);

impl<'de> DeserializeSeed<'de> for Top<'_> {
    type Value = Found<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Found<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> DeserializeSeed<'de> for FieldValue {
    type Value = Found<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Found<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

/// The JSON kind of a value that was not what was wanted (`Top` and `FieldValue` differ
/// only in what they make of objects and strings).
macro_rules! other_kinds {
    ($wrap:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($wrap("boolean"))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($wrap("number"))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($wrap("number"))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($wrap("number"))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($wrap("null"))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($wrap("array"))
        }
    };
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = Found<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    other_kinds!(Found::NotObject);
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Found<'de>, E> {
        Ok(Found::NotObject("string"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found<'de>, A::Error> {
        let mut found = Found::Missing;
        while let Some(is_field) = map.next_key_seed(KeyIs(self.field))? {
            if is_field {
                found = map.next_value_seed(FieldValue)?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

impl<'de> Visitor<'de> for FieldValue {
    type Value = Found<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    other_kinds!(Found::Other);
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Found<'de>, E> {
        Ok(Found::Text(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Found<'de>, E> {
        Ok(Found::Text(Cow::Owned(v.to_owned())))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Found::Other("object"))
    }
}

/// Whole lines of `path` from byte `start` (a line start): about `size` bytes, never past
/// `end`; a line longer than `size` is read whole. Only the last line at `end` (or at the
/// end of the file) may lack its `\n`. Read here rather than in Python so that reading
/// takes no GIL and no copies; the first `size` bytes are read in parallel slices on the
/// current rayon pool (the copy out of the page cache was the serial part of a batch).
pub fn read_whole_lines(path: &Path, start: u64, end: u64, size: usize) -> io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let want = (end.saturating_sub(start)).min(size as u64) as usize;
    let mut buf = vec![0u8; want];
    let got: usize = buf
        .par_chunks_mut(PARALLEL_READ)
        .enumerate()
        .map(|(k, chunk)| read_at_most(&file, chunk, start + (k * PARALLEL_READ) as u64))
        .collect::<io::Result<Vec<usize>>>()?
        .into_iter()
        .sum();
    if got < want {
        // The file ends inside the range: the slices before its end are full.
        buf.truncate(got);
        return Ok(buf);
    }
    let mut searched = 0; // bytes of buf known to hold no newline
    let mut file = file;
    loop {
        if start + buf.len() as u64 >= end {
            return Ok(buf); // the end of the span: the last line is whole
        }
        if let Some(i) = memchr::memrchr(b'\n', &buf[searched..]) {
            buf.truncate(searched + i + 1);
            return Ok(buf);
        }
        // A line longer than `size`: read on until it ends.
        searched = buf.len();
        let more = (end - start - buf.len() as u64).min(size as u64);
        file.seek(SeekFrom::Start(start + buf.len() as u64))?;
        if (&mut file).take(more).read_to_end(&mut buf)? == 0 {
            return Ok(buf); // the end of the file
        }
    }
}

/// Slices a parallel read is cut into.
const PARALLEL_READ: usize = 1 << 20;

/// Fills `buf` from `offset` as far as the file goes; the bytes read.
fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        #[cfg(unix)]
        let read = file.read_at(&mut buf[done..], offset + done as u64);
        #[cfg(windows)]
        let read = file.seek_read(&mut buf[done..], offset + done as u64);
        match read {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(line: &str, field: Option<&str>) -> Result<String, SkipKind> {
        match line_record(line.as_bytes(), field) {
            Record::Document(t) => Ok(t.into_owned()),
            Record::Skip(kind, _) => Err(kind),
        }
    }

    #[test]
    fn text_lines_lose_only_their_line_end() {
        assert_eq!(doc("你好 \r\n", None), Ok("你好 ".into()));
        assert_eq!(doc(" \t", None), Ok(" \t".into()));
        assert_eq!(doc("\r\n", None), Err(SkipKind::Empty));
        assert_eq!(doc("", None), Err(SkipKind::Empty));
        match line_record(b"ab\xff\xfe\n", None) {
            Record::Skip(SkipKind::InvalidUtf8, m) => assert!(m.contains("byte 2"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_lines_give_their_field() {
        let f = Some("text");
        assert_eq!(
            doc(r#"{"id": 1, "text": "中文", "x": [1, {"text": 2}]}"#, f),
            Ok("中文".into())
        );
        assert_eq!(
            doc(r#"{"text": "a\nb\u4e2d\ud83d\ude00"}"#, f),
            Ok("a\nb中😀".into())
        );
        assert_eq!(
            doc(r#"{"text": 1, "text": "last wins"}"#, f),
            Ok("last wins".into())
        );
        assert_eq!(
            doc(r#"{"te\u0078t": "escaped key"}"#, f),
            Ok("escaped key".into())
        );
        assert_eq!(doc(r#"{"text": ""}"#, f), Ok("".into()));
        assert_eq!(doc(r#"{"body": "x"}"#, f), Err(SkipKind::MissingField));
        assert_eq!(doc(r#"["text"]"#, f), Err(SkipKind::MissingField));
        assert_eq!(doc(r#""text""#, f), Err(SkipKind::MissingField));
        for v in ["7", "1.5", "null", "true", "[\"a\"]", "{\"a\": 1}"] {
            assert_eq!(
                doc(&format!(r#"{{"text": {v}}}"#), f),
                Err(SkipKind::NotText),
                "{v}"
            );
        }
        for bad in [
            r#"{"text": "a""#,
            r#"{"text": "a"} x"#,
            "{'text': 'a'}",
            r#"{"text": NaN}"#,
        ] {
            assert_eq!(doc(bad, f), Err(SkipKind::InvalidJson), "{bad}");
        }
        assert_eq!(
            doc(r#"{"text": "x\ud800y"}"#, f),
            Err(SkipKind::InvalidUnicode)
        );
        assert_eq!(
            doc(r#"{"text": "x\udc00y"}"#, f),
            Err(SkipKind::InvalidUnicode)
        );
        assert_eq!(
            doc(r#"{"text": "x\ud800\u0041"}"#, f),
            Err(SkipKind::InvalidUnicode)
        );
        assert_eq!(doc(r#"{"text": "x\u00zz"}"#, f), Err(SkipKind::InvalidJson));
    }

    #[test]
    fn whole_lines_are_read_up_to_the_span_end() {
        let dir = std::env::temp_dir().join(format!("hanpack-records-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lines.txt");
        std::fs::write(&path, "aa\nbbbbbbbb\ncc\ndd").unwrap();
        let read = |start, end, size| {
            String::from_utf8(read_whole_lines(&path, start, end, size).unwrap()).unwrap()
        };
        assert_eq!(read(0, 17, 4), "aa\n"); // cut after the last whole line
        assert_eq!(read(3, 17, 4), "bbbbbbbb\ncc\n"); // a line longer than `size` comes whole
        assert_eq!(read(3, 17, 100), "bbbbbbbb\ncc\ndd"); // the end of the file
        assert_eq!(read(0, 12, 100), "aa\nbbbbbbbb\n"); // the end of the span
        assert_eq!(read(15, 17, 4), "dd");
        assert!(read_whole_lines(&dir.join("absent"), 0, 1, 1).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unescaped_documents_are_borrowed() {
        let line = br#"{"text": "plain"}"#;
        assert!(matches!(
            line_record(line, Some("text")),
            Record::Document(Cow::Borrowed("plain"))
        ));
    }
}
