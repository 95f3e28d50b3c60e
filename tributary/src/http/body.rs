//! Request bodies: the size limit and gzip, before anything parses them.

use std::io::Read;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error(
        "request body is larger than the limit of {limit_bytes} bytes; send smaller batches or raise --max-http-request-size (TRIBUTARY_MAX_HTTP_REQUEST_SIZE)"
    )]
    TooLarge { limit_bytes: usize },
    #[error(
        "gzip body decompresses to more than the limit of {limit_bytes} bytes; send smaller batches or raise --max-http-request-size (TRIBUTARY_MAX_HTTP_REQUEST_SIZE)"
    )]
    DecompressedTooLarge { limit_bytes: usize },
    #[error("request body is not valid gzip: {0}")]
    BadGzip(std::io::Error),
    #[error("unsupported Content-Encoding `{0}`: send identity or gzip")]
    UnsupportedEncoding(String),
    #[error("cannot read the request body: {0}")]
    Read(String),
}

/// Reads the whole body, at most `limit_bytes`, and decompresses gzip (also multi-member)
/// to at most `limit_bytes`.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit_bytes: usize,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit_bytes as u64) {
        return Err(BodyError::TooLarge { limit_bytes });
    }
    let raw = match Limited::new(body, limit_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(BodyError::TooLarge { limit_bytes });
        }
        Err(e) => return Err(BodyError::Read(e.to_string())),
    };
    let encoding = headers
        .get(CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("").trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(raw),
        Some("gzip") | Some("x-gzip") => {
            tokio::task::spawn_blocking(move || gunzip(&raw, limit_bytes))
                .await
                .map_err(|e| BodyError::Read(e.to_string()))?
        }
        Some(other) => Err(BodyError::UnsupportedEncoding(other.to_owned())),
    }
}

fn gunzip(compressed: &[u8], limit_bytes: usize) -> Result<Bytes, BodyError> {
    let decoder = flate2::read::MultiGzDecoder::new(compressed);
    // Read one byte past the limit to tell "exactly at the limit" from "over it".
    let mut limited = decoder.take(limit_bytes as u64 + 1);
    let mut out = Vec::with_capacity((compressed.len() * 4).min(limit_bytes + 1));
    limited.read_to_end(&mut out).map_err(BodyError::BadGzip)?;
    if out.len() > limit_bytes {
        return Err(BodyError::DecompressedTooLarge { limit_bytes });
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_members_are_concatenated() {
        let mut body = gz(b"m f=1 1\n");
        body.extend(gz(b"m f=2 2\n"));
        assert_eq!(&gunzip(&body, 1024).unwrap()[..], b"m f=1 1\nm f=2 2\n");
    }

    #[test]
    fn gzip_bomb_stops_at_the_limit() {
        let bomb = gz(&vec![b'a'; 10 * 1024 * 1024]);
        assert!(bomb.len() < 64 * 1024);
        assert!(matches!(
            gunzip(&bomb, 1024 * 1024),
            Err(BodyError::DecompressedTooLarge { .. })
        ));
    }

    #[test]
    fn garbage_is_not_gzip() {
        assert!(matches!(
            gunzip(b"not gzip at all", 1024),
            Err(BodyError::BadGzip(_))
        ));
    }
}
