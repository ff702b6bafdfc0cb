//! Decoding compressed request bodies (`content-encoding: zstd | gzip | deflate`), bounded.
//!
//! Passthrough routes forward the client's bytes unchanged; the decoded form is only read
//! (today: for the `stream` field). Decoding stops at the body limit, so a small compressed
//! body cannot expand into unbounded memory (a "zip bomb" gets 413).

use std::io::Read;

use http::header::{self, HeaderMap};

/// Why a body could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Decoded, it is larger than the limit.
    TooLarge,
    /// An encoding this proxy does not know, or more than one.
    Unsupported,
    /// The bytes are not valid for their declared encoding.
    Corrupt,
}

/// The body's content coding, `None` for identity.
fn coding(headers: &HeaderMap) -> Result<Option<&'static str>, DecodeError> {
    let mut values = headers.get_all(header::CONTENT_ENCODING).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(DecodeError::Unsupported);
    }
    let value = value.to_str().map_err(|_| DecodeError::Unsupported)?.trim();
    match value.to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(None),
        "zstd" => Ok(Some("zstd")),
        "gzip" | "x-gzip" => Ok(Some("gzip")),
        "deflate" => Ok(Some("deflate")),
        _ => Err(DecodeError::Unsupported),
    }
}

/// The decoded body, or `None` when it is not encoded (use the bytes as they are).
pub fn decode(
    headers: &HeaderMap,
    body: &[u8],
    limit: usize,
) -> Result<Option<Vec<u8>>, DecodeError> {
    let Some(coding) = coding(headers)? else {
        return Ok(None);
    };
    let reader: Box<dyn Read + '_> = match coding {
        "zstd" => {
            Box::new(zstd::stream::read::Decoder::new(body).map_err(|_| DecodeError::Corrupt)?)
        }
        "gzip" => Box::new(flate2::read::GzDecoder::new(body)),
        _ => Box::new(flate2::read::ZlibDecoder::new(body)),
    };
    let mut out = Vec::with_capacity((body.len() * 4).min(limit));
    // One byte past the limit tells "exactly at the limit" from "over it".
    let read = reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| DecodeError::Corrupt)?;
    if read > limit {
        return Err(DecodeError::TooLarge);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::io::Write;

    fn headers(coding: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
        h
    }

    const BODY: &[u8] = br#"{"model":"gpt-5","stream":true,"input":"hello"}"#;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn decodes_zstd_gzip_and_deflate() {
        let zstd = zstd::encode_all(BODY, 3).unwrap();
        assert_eq!(
            decode(&headers("zstd"), &zstd, 1000).unwrap().unwrap(),
            BODY
        );
        assert_eq!(
            decode(&headers("gzip"), &gzip(BODY), 1000)
                .unwrap()
                .unwrap(),
            BODY
        );
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(BODY).unwrap();
        assert_eq!(
            decode(&headers("deflate"), &z.finish().unwrap(), 1000)
                .unwrap()
                .unwrap(),
            BODY
        );
    }

    #[test]
    fn identity_and_absent_mean_no_decoding() {
        assert_eq!(decode(&HeaderMap::new(), BODY, 10), Ok(None));
        assert_eq!(decode(&headers("identity"), BODY, 10), Ok(None));
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let bomb = zstd::encode_all(&vec![b'a'; 10 << 20][..], 3).unwrap();
        assert!(bomb.len() < 4096);
        assert_eq!(
            decode(&headers("zstd"), &bomb, 1 << 20),
            Err(DecodeError::TooLarge)
        );
        let exact = gzip(&vec![b'a'; 1000]);
        assert_eq!(
            decode(&headers("gzip"), &exact, 1000)
                .unwrap()
                .unwrap()
                .len(),
            1000
        );
        assert_eq!(
            decode(&headers("gzip"), &exact, 999),
            Err(DecodeError::TooLarge)
        );
    }

    #[test]
    fn unknown_stacked_or_corrupt_encodings_are_refused() {
        assert_eq!(
            decode(&headers("br"), BODY, 1000),
            Err(DecodeError::Unsupported)
        );
        assert_eq!(
            decode(&headers("gzip, zstd"), BODY, 1000),
            Err(DecodeError::Unsupported)
        );
        assert_eq!(
            decode(&headers("zstd"), b"not zstd", 1000),
            Err(DecodeError::Corrupt)
        );
        assert_eq!(
            decode(&headers("gzip"), b"not gzip", 1000),
            Err(DecodeError::Corrupt)
        );
    }
}
