//! A minimal blocking HTTP/1.1 client for the bench: one kept-alive TCP connection with
//! Nagle off, each request written in one piece, each answer read to its end by
//! `Content-Length` or the chunked coding. Starting curl per request would time curl's
//! start-up, not browserd.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long an answer may take: a bulk terminate waits up to its grace.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// One connection to the daemon's HTTP listener, authenticated by its token.
pub struct Connection {
    reader: BufReader<TcpStream>,
    host: String,
    authorization: String,
}

/// One answer, read to its end.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as text, for error messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// How an answer's body ends.
enum Framing {
    /// 204 and 304 have none, whatever the headers say.
    Empty,
    Length(u64),
    Chunked,
    /// Neither length nor chunks: the server closes the connection after it.
    UntilClose,
}

impl Connection {
    /// Connects to `addr` (`HOST:PORT`); every request carries `Authorization: Bearer TOKEN`.
    pub fn open(addr: &str, token: &str) -> io::Result<Connection> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        stream.set_write_timeout(Some(ANSWER_TIMEOUT))?;
        Ok(Connection {
            reader: BufReader::new(stream),
            host: addr.to_owned(),
            authorization: format!("Bearer {token}"),
        })
    }

    /// Sends a request and reads its answer.
    pub fn request(&mut self, method: &str, path: &str, json: Option<&[u8]>) -> io::Result<Answer> {
        self.send(method, path, json)?;
        let (status, framing) = self.read_head()?;
        let mut body = Vec::new();
        match framing {
            Framing::Empty => {}
            Framing::Length(n) => {
                (&mut self.reader).take(n).read_to_end(&mut body)?;
                if body.len() as u64 != n {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            Framing::Chunked => {
                Chunked::new(&mut self.reader).read_to_end(&mut body)?;
            }
            Framing::UntilClose => {
                self.reader.read_to_end(&mut body)?;
            }
        }
        Ok(Answer { status, body })
    }

    /// Sends a `GET` whose answer is a stream (Server-Sent Events) and reads its head: the
    /// status, and the body to read as it comes. The stream ends when the server closes it
    /// or the socket is shut down (see [`Connection::socket`]).
    pub fn open_stream(mut self, path: &str) -> io::Result<(u16, impl BufRead)> {
        self.send("GET", path, None)?;
        let (status, framing) = self.read_head()?;
        if !matches!(framing, Framing::Chunked) {
            return Err(invalid(format!("the answer to GET {path} is not chunked")));
        }
        Ok((status, BufReader::new(Chunked::new(self.reader))))
    }

    /// Another handle on the same socket, e.g. to shut it down from another thread.
    pub fn socket(&self) -> io::Result<TcpStream> {
        self.reader.get_ref().try_clone()
    }

    fn send(&mut self, method: &str, path: &str, json: Option<&[u8]>) -> io::Result<()> {
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\n",
            self.host, self.authorization
        );
        if let Some(body) = json {
            request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(json.unwrap_or_default());
        self.reader.get_mut().write_all(&bytes)
    }

    /// Reads a status line and headers, skipping interim (1xx) answers.
    fn read_head(&mut self) -> io::Result<(u16, Framing)> {
        loop {
            let status_line = read_line(&mut self.reader)?;
            let status: u16 = status_line
                .split_whitespace()
                .nth(1)
                .and_then(|code| code.parse().ok())
                .ok_or_else(|| invalid(format!("not a status line: {status_line:?}")))?;
            let mut length = None;
            let mut chunked = false;
            loop {
                let line = read_line(&mut self.reader)?;
                if line.is_empty() {
                    break;
                }
                let (name, value) = line
                    .split_once(':')
                    .ok_or_else(|| invalid(format!("not a header: {line:?}")))?;
                if name.eq_ignore_ascii_case("content-length") {
                    let n = value.trim().parse().map_err(|_| invalid(line.clone()))?;
                    length = Some(n);
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.to_ascii_lowercase().contains("chunked");
                }
            }
            if (100..200).contains(&status) {
                continue;
            }
            let framing = match (status, chunked, length) {
                (204 | 304, _, _) => Framing::Empty,
                (_, true, _) => Framing::Chunked,
                (_, false, Some(n)) => Framing::Length(n),
                (_, false, None) => Framing::UntilClose,
            };
            return Ok((status, framing));
        }
    }
}

/// A chunked body, decoded as it is read; ends after the last chunk and its trailers.
struct Chunked<R> {
    inner: R,
    /// Bytes left in the current chunk.
    left: u64,
    /// The CRLF that ends a chunk's data, read before the next chunk (not right after the
    /// data, so a reader of a stream is never held up waiting for it).
    crlf_due: bool,
    done: bool,
}

impl<R: BufRead> Chunked<R> {
    fn new(inner: R) -> Chunked<R> {
        Chunked {
            inner,
            left: 0,
            crlf_due: false,
            done: false,
        }
    }
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            if self.crlf_due {
                if !read_line(&mut self.inner)?.is_empty() {
                    return Err(invalid("no CRLF after a chunk".to_owned()));
                }
                self.crlf_due = false;
            }
            let size_line = read_line(&mut self.inner)?;
            let size = size_line.split(';').next().unwrap_or_default().trim();
            self.left = u64::from_str_radix(size, 16)
                .map_err(|_| invalid(format!("not a chunk size: {size_line:?}")))?;
            if self.left == 0 {
                while !read_line(&mut self.inner)?.is_empty() {}
                self.done = true;
                return Ok(0);
            }
        }
        let want = self.left.min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n as u64;
        self.crlf_due = self.left == 0;
        Ok(n)
    }
}

/// One line without its CRLF; the end of the stream is an error.
fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let trimmed = line.trim_end_matches(['\r', '\n']).len();
    line.truncate(trimmed);
    Ok(line)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_decode_across_chunks_and_trailers() {
        let wire = b"4\r\nWiki\r\n6;ext=1\r\npedia \r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let mut inner = &wire[..];
        let mut body = String::new();
        Chunked::new(&mut inner).read_to_string(&mut body).unwrap();
        assert_eq!(body, "Wikipedia ");
        assert_eq!(inner, b"NEXT", "the decoder stops at the body's end");
    }

    #[test]
    fn a_cut_chunked_body_is_an_error() {
        let wire = b"a\r\nshort";
        let mut body = Vec::new();
        assert!(Chunked::new(&wire[..]).read_to_end(&mut body).is_err());
    }
}
