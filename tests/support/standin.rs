//! A loopback stand-in for Azure's Put Block From URL, for a [`FaultProxy`] responder.
//!
//! [`FaultProxy`]: super::faultproxy::FaultProxy

use super::faultproxy::{Responder, Seen};

/// A loopback stand-in for Azure's Put Block From URL, answering at the proxy (Azurite
/// 3.37 implements the operation but answers 500 to it under an account SAS, the
/// credential blobpipe signs from a key). It checks the request's shape — no body,
/// `x-ms-copy-source` with a SAS, `x-ms-source-range`, `x-ms-source-content-md5` — then
/// does what the service does: reads the range from the source (Azurite, beside the
/// proxy), compares its MD5 (400 `Md5Mismatch`) and stages it with a plain Put Block.
/// `x-ms-source-content-md5` is checked when sent; `x-ms-source-if-match` is passed on as
/// `If-Match` (a changed source: 412 `SourceConditionNotMet`). The bytes go between the
/// stand-in and Azurite, never through the proxy's client side.
pub fn put_block_from_url(upstream: std::net::SocketAddr) -> Responder {
    use std::io::{Read, Write};
    std::sync::Arc::new(move |head: &str, seen: &Seen| {
        let header = |name: &str| {
            head.lines().skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let source = header("x-ms-copy-source")?;
        assert!(seen.is_put_block(), "x-ms-copy-source on {seen:?}");
        assert_eq!(
            header("content-length").as_deref(),
            Some("0"),
            "a body was sent"
        );
        assert!(source.contains("sig="), "the source URL carries no SAS");
        assert!(
            source.contains("sp=r&") && source.contains("srt=o&"),
            "the source URL's SAS may do more than read objects"
        );
        let range = header("x-ms-source-range").expect("x-ms-source-range");
        // Optional: a blob source does not know the range's MD5 (the service answers it).
        let want = header("x-ms-source-content-md5");
        // Only the named version of the source (`x-ms-source-if-match` → `If-Match`).
        let if_match = header("x-ms-source-if-match")
            .map(|e| format!("If-Match: {e}\r\n"))
            .unwrap_or_default();
        let exchange = |req: Vec<u8>| {
            let mut c = std::net::TcpStream::connect(upstream).expect("upstream");
            c.write_all(&req).expect("send");
            let mut rsp = Vec::new();
            c.read_to_end(&mut rsp).expect("read");
            let at = rsp.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
            let status = String::from_utf8_lossy(&rsp[9..12]).to_string();
            (status, rsp[at..].to_vec())
        };
        let src = url::Url::parse(&source).expect("source URL");
        let (status, body) = exchange(
            format!(
                "GET {}?{} HTTP/1.0\r\nHost: {}\r\nRange: {range}\r\n{if_match}x-ms-version: 2025-01-05\r\n\r\n",
                src.path(),
                src.query().unwrap_or(""),
                src.host_str().unwrap_or("")
            )
            .into_bytes(),
        );
        let md5 = blobpipe::store::b64(&blobpipe::store::md5(&body));
        if !status.starts_with('2') || want.as_ref().is_some_and(|w| *w != md5) {
            let (code, why) = if status == "412" {
                ("412", "SourceConditionNotMet")
            } else if status.starts_with('2') {
                ("400", "Md5Mismatch")
            } else {
                ("404", "CannotVerifyCopySource")
            };
            return Some(format!(
                "HTTP/1.1 {code} Refused\r\nx-ms-error-code: {why}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ));
        }
        // Stage it: the request's own target (blob, block id, the destination's SAS).
        let target = head.split_whitespace().nth(1).expect("target");
        let mut put = format!(
            "PUT {target} HTTP/1.0\r\nHost: {}\r\nContent-Length: {}\r\nContent-MD5: {md5}\r\nx-ms-version: 2025-01-05\r\n\r\n",
            upstream,
            body.len()
        )
        .into_bytes();
        put.extend_from_slice(&body);
        let (status, _) = exchange(put);
        assert_eq!(status, "201", "staging at Azurite");
        Some(format!(
            "HTTP/1.1 201 Created\r\nContent-MD5: {md5}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ))
    })
}
