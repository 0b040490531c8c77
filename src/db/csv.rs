//! The CSV both database sources write and both loaders read: a header line per entry,
//! RFC 4180 quoting, every non-NULL value quoted and NULL the only unquoted empty field,
//! so NULL and the empty string survive a round trip and the row-set checksum over the
//! rows does not depend on which side produced them.

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::manifest::Column;

/// Append one CSV field: NULL unquoted and empty, everything else quoted. Writes into
/// a `Vec<u8>` or a `BytesMut` (the MySQL reader's row arena); quotes are found with
/// `memchr` and the runs between them copied whole.
pub fn csv_field<B: bytes::BufMut>(out: &mut B, v: Option<&[u8]>, binary: bool) {
    let Some(v) = v else { return };
    out.put_u8(b'"');
    if binary {
        out.put_slice(b"\\x");
        let mut hex_buf = [0u8; 512];
        for part in v.chunks(hex_buf.len() / 2) {
            let n = part.len() * 2;
            // Cannot fail: the buffer is exactly twice the part.
            let _ = hex::encode_to_slice(part, &mut hex_buf[..n]);
            out.put_slice(&hex_buf[..n]);
        }
    } else {
        let mut rest = v;
        while let Some(q) = memchr::memchr(b'"', rest) {
            out.put_slice(&rest[..=q]);
            out.put_u8(b'"');
            rest = &rest[q + 1..];
        }
        out.put_slice(rest);
    }
    out.put_u8(b'"');
}

/// The most bytes [`csv_field`] writes for a value of `len` bytes (every byte a quote,
/// or hex).
pub fn csv_field_max(len: usize) -> usize {
    2 * len + 4
}

/// The CSV header line for `cols`.
pub fn csv_header(cols: &[Column]) -> Bytes {
    let mut out = Vec::new();
    for (i, c) in cols.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        csv_field(&mut out, Some(c.name.as_bytes()), false);
    }
    out.push(b'\n');
    Bytes::from(out)
}

/// Parse CSV as written by either source into records of optional fields (`None` =
/// NULL: an unquoted empty field).
///
/// # Errors
/// `Integrity` for an unterminated quote.
pub fn parse_csv(data: &[u8]) -> Result<Vec<Vec<Option<Vec<u8>>>>> {
    let mut out = Vec::new();
    let mut rec: Vec<Option<Vec<u8>>> = Vec::new();
    let mut field = Vec::new();
    let (mut quoted, mut in_quotes, mut any) = (false, false, false);
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        if in_quotes {
            if b == b'"' {
                if data.get(i + 1) == Some(&b'"') {
                    field.push(b'"');
                    i += 1;
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(b);
            }
        } else {
            match b {
                b'"' => {
                    in_quotes = true;
                    quoted = true;
                }
                b',' => {
                    rec.push(if quoted || !field.is_empty() {
                        Some(std::mem::take(&mut field))
                    } else {
                        None
                    });
                    quoted = false;
                }
                b'\n' | b'\r' => {
                    if b == b'\r' && data.get(i + 1) == Some(&b'\n') {
                        i += 1;
                    }
                    rec.push(if quoted || !field.is_empty() {
                        Some(std::mem::take(&mut field))
                    } else {
                        None
                    });
                    quoted = false;
                    out.push(std::mem::take(&mut rec));
                    any = false;
                    i += 1;
                    continue;
                }
                _ => field.push(b),
            }
        }
        any = true;
        i += 1;
    }
    if in_quotes {
        return Err(Error::integrity("CSV chunk ends inside a quoted field"));
    }
    if any {
        rec.push(if quoted || !field.is_empty() {
            Some(field)
        } else {
            None
        });
        out.push(rec);
    }
    Ok(out)
}
