//! A fake OpenAI-compatible chat-completions server for judge tests: real HTTP on 127.0.0.1:0,
//! every request recorded, each answer chosen by a script from the request body.
//!
//! Owns: the listener thread and the request log. Must not know what the server under test
//! does with the answers.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
    pub at: Instant,
}

impl Seen {
    /// The content of the last message with this role.
    pub fn message(&self, role: &str) -> String {
        self.body["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .rfind(|m| m["role"] == role)
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_string()
    }
}

/// What to answer: status, JSON body, and a delay before answering.
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub delay: Duration,
}

impl Answer {
    pub fn ok(body: Value) -> Answer {
        Answer {
            status: 200,
            body,
            delay: Duration::ZERO,
        }
    }

    pub fn status(status: u16, message: &str) -> Answer {
        Answer {
            status,
            body: json!({"error": {"message": message}}),
            delay: Duration::ZERO,
        }
    }
}

/// A chat-completion answer whose message content is `content`.
pub fn completion(content: &str, prompt_tokens: u64, completion_tokens: u64) -> Value {
    json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "fake-judge-1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    })
}

type Script = Box<dyn FnMut(&Seen, &[Seen]) -> Answer + Send>;

pub struct FakeJudge {
    /// `http://127.0.0.1:<port>/v1`: what `[judge] base_url` takes.
    pub base_url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    addr: String,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeJudge {
    /// Serves until dropped. `script` gets each request and the ones before it.
    pub fn start(script: impl FnMut(&Seen, &[Seen]) -> Answer + Send + 'static) -> FakeJudge {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake judge");
        let addr = listener.local_addr().unwrap().to_string();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut script: Script = Box::new(script);
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let _ = serve(conn, &seen2, &mut script);
            }
        });
        FakeJudge {
            base_url: format!("http://{addr}/v1"),
            seen,
            stop,
            addr,
            thread: Some(thread),
        }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests whose user message contains `needle`.
    pub fn requests_with(&self, needle: &str) -> Vec<Seen> {
        self.requests()
            .into_iter()
            .filter(|r| r.message("user").contains(needle))
            .collect()
    }
}

impl Drop for FakeJudge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut conn: TcpStream, seen: &Mutex<Vec<Seen>>, script: &mut Script) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let (mut length, mut authorization) = (0usize, None);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            let value = value.trim().to_string();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse().unwrap_or(0),
                "authorization" => authorization = Some(value),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let request = Seen {
        path,
        authorization,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        at: Instant::now(),
    };
    let answer = {
        let mut all = seen.lock().unwrap();
        let answer = script(&request, &all);
        all.push(request);
        answer
    };
    std::thread::sleep(answer.delay);
    let text = answer.body.to_string();
    write!(
        conn,
        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        answer.status,
        text.len(),
        text
    )?;
    conn.flush()
}
