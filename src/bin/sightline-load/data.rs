//! The synthetic data set: LLM traces made from a seed, so the generator and the query
//! benchmark agree on ids, users and planted words without sharing any state but the seed.
//!
//! Owns: the random source, the vocabulary, and the shape of one trace (a root span and its
//! generations). Knows nothing about wire formats or HTTP.

use serde_json::{Value, json};

/// Planted in one generation in `RARE_EVERY`: a search that matches ~0.01 % of documents.
pub const RARE_WORD: &str = "zanzibar";
pub const RARE_EVERY: u64 = 10_000;
/// Planted in one generation in `UNCOMMON_EVERY` (1 %).
pub const UNCOMMON_WORD: &str = "quokka";
pub const UNCOMMON_EVERY: u64 = 100;
/// A real word from the head of the vocabulary: in a large share of all documents.
pub const COMMON_WORD: &str = "refund";

/// Models a generation may use, with their share (out of the sum of weights): ~8 as in a real
/// deployment, one of them absent from the price list.
pub const MODELS: [(&str, u32); 8] = [
    ("gpt-4o", 24),
    ("gpt-4o-mini", 30),
    ("gpt-4.1", 8),
    ("o3-mini", 6),
    ("claude-3-5-sonnet-20241022", 14),
    ("claude-3-5-haiku-20241022", 8),
    ("gemini-1.5-flash", 7),
    ("acme-llama-70b", 3),
];

/// Distinct users and their share of sessions.
pub const USERS: u64 = 1_000;
/// Traces per session, on average.
const TRACES_PER_SESSION: u64 = 5;

/// The generator's command-line parameters, shared by `ingest` and `probe`: what is sent, by
/// how many clients, in requests of what size.
#[derive(clap::Args, Clone, Debug)]
pub struct LoadArgs {
    #[arg(long, default_value_t = 1_000)]
    pub traces: u64,
    /// Observations per trace: a root span plus this many minus one generations.
    #[arg(long, default_value_t = 4)]
    pub spans_per_trace: usize,
    /// Spans per request (rounded down to whole traces, at least one trace).
    #[arg(long, default_value_t = 200)]
    pub batch: usize,
    /// Clients, each with one request in flight.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Prompt + response bytes per generation.
    #[arg(long, default_value_t = 1_024)]
    pub payload_bytes: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The traces' timestamps spread evenly over this many days before now.
    #[arg(long, default_value_t = 7.0)]
    pub days: f64,
    /// Trace and span ids that grow with the trace (as UUIDv7 or ULIDs do) instead of random
    /// ones.
    #[arg(long)]
    pub ordered_ids: bool,
}

impl LoadArgs {
    /// The traces these parameters describe, ending now, with `run_tag` planted in every
    /// observation.
    pub fn shape(&self, run_tag: String) -> anyhow::Result<Shape> {
        let window = (self.days * 86_400e6) as i64;
        Shape {
            seed: self.seed,
            spans: self.spans_per_trace,
            payload_bytes: self.payload_bytes,
            start_micros: crate::now_micros() - window,
            step_micros: (window / self.traces.max(1) as i64).max(1),
            run_tag,
            ordered_ids: self.ordered_ids,
        }
        .checked()
    }

    /// Whole traces per request.
    pub fn traces_per_request(&self) -> u64 {
        (self.batch / self.spans_per_trace.max(1)).max(1) as u64
    }

    pub fn spans(&self) -> u64 {
        self.traces * self.spans_per_trace as u64
    }
}

/// SplitMix64: tiny, fast, and the same sequence on every platform and version.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// The generator's parameters that decide what a trace looks like.
#[derive(Clone, Debug)]
pub struct Shape {
    pub seed: u64,
    /// Observations per trace: one root span plus `spans - 1` generations.
    pub spans: usize,
    /// Bytes of prompt + response text per generation.
    pub payload_bytes: usize,
    /// First trace's timestamp (µs) and the time between two traces' starts.
    pub start_micros: i64,
    pub step_micros: i64,
    /// A word planted in every observation's input; searching it counts this run's documents.
    pub run_tag: String,
    /// Ids that grow with the trace's index, as time-ordered ids (UUIDv7, ULID) do, instead of
    /// random ones (OpenTelemetry's and the Langfuse SDKs').
    pub ordered_ids: bool,
}

pub struct TraceData {
    pub trace_id: [u8; 16],
    pub name: &'static str,
    pub user: String,
    pub session: String,
    pub spans: Vec<SpanData>,
}

pub struct SpanData {
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub name: &'static str,
    /// `None` for the root span, a model for a generation.
    pub model: Option<&'static str>,
    pub start_micros: i64,
    pub end_micros: i64,
    pub input: Value,
    pub output: Value,
    pub usage: Option<(u64, u64)>,
    pub metadata: Value,
}

const TRACE_NAMES: [&str; 6] = [
    "support-chat",
    "summarize-document",
    "rag-answer",
    "classify-ticket",
    "translate",
    "code-review",
];
const GENERATION_NAMES: [&str; 4] = ["plan", "retrieve-and-answer", "refine", "final-answer"];
const SYSTEM_PROMPTS: [&str; 4] = [
    "You are a helpful support assistant for an online store. Answer briefly and cite the policy section you used.",
    "You summarize documents for busy readers. Keep the summary under one hundred words and keep all numbers.",
    "You answer questions using only the retrieved passages below. Say you do not know when they do not cover it.",
    "You are a senior engineer reviewing a change. Point out bugs first, then style, and be specific.",
];
const REGIONS: [&str; 5] = ["eu-west", "us-east", "us-west", "ap-south", "sa-east"];

const EN: &[&str] = &[
    "the",
    "a",
    "to",
    "and",
    "of",
    "in",
    "is",
    "for",
    "that",
    "with",
    "on",
    "this",
    "you",
    "it",
    "be",
    "can",
    "please",
    "my",
    "order",
    "customer",
    "refund",
    "policy",
    "account",
    "invoice",
    "shipping",
    "delay",
    "product",
    "review",
    "email",
    "meeting",
    "schedule",
    "code",
    "function",
    "error",
    "database",
    "query",
    "latency",
    "budget",
    "forecast",
    "sales",
    "region",
    "quarter",
    "growth",
    "risk",
    "contract",
    "clause",
    "legal",
    "draft",
    "summary",
    "document",
    "answer",
    "question",
    "password",
    "reset",
    "delivery",
    "payment",
    "card",
    "subscription",
    "cancel",
    "upgrade",
    "plan",
    "price",
    "discount",
    "warranty",
    "return",
    "package",
    "tracking",
    "address",
    "support",
    "ticket",
    "issue",
    "bug",
    "release",
    "deploy",
    "test",
    "memory",
    "timeout",
    "retry",
];
const DE: &[&str] = &[
    "Straße",
    "Größe",
    "Rechnung",
    "Kunde",
    "Bestellung",
    "Lieferung",
    "Verspätung",
    "bitte",
    "zusammenfassen",
    "Vertrag",
    "und",
    "mit",
    "für",
    "über",
    "der",
    "die",
    "das",
    "nicht",
];
const ZH: &[&str] = &[
    "我们", "客户", "订单", "退款", "政策", "天气", "明天", "报告", "发票", "账户", "密码", "产品",
    "评论", "翻译", "会议", "问题",
];
const AR: &[&str] = &[
    "مرحبا",
    "المكتبة",
    "العميل",
    "الطلب",
    "استرداد",
    "السياسة",
    "الطقس",
    "غدا",
    "التقرير",
];
const SYLLABLES: [&str; 32] = [
    "ka", "lo", "mi", "ren", "sto", "va", "el", "dor", "ful", "gi", "han", "tor", "ex", "pli",
    "qu", "ra", "sen", "ti", "um", "bel", "cor", "dan", "fi", "gro", "lin", "mar", "nel", "pos",
    "sar", "tem", "vin", "zo",
];
/// Size of the synthetic long-tail vocabulary (Zipf-like: a few words everywhere, most rare).
const TAIL_WORDS: u64 = 60_000;

impl Shape {
    /// Lowercase hex of trace `index`'s id: the same id in every wire format and in the API.
    pub fn trace_id(&self, index: u64) -> [u8; 16] {
        let mut r = Rng::new(mix(&[self.seed, index, u64::MAX]));
        let mut id = [0u8; 16];
        let head = if self.ordered_ids {
            self.ordered(index, 0)
        } else {
            r.next()
        };
        id[..8].copy_from_slice(&head.to_be_bytes());
        id[8..].copy_from_slice(&r.next().to_be_bytes());
        id
    }

    pub fn span_id(&self, index: u64, span: usize) -> [u8; 8] {
        if self.ordered_ids {
            return self.ordered(index, span).to_be_bytes();
        }
        Rng::new(mix(&[self.seed, index, span as u64]))
            .next()
            .to_be_bytes()
    }

    /// The shape, if every trace gets distinct ids: at least one span, and with ordered ids a
    /// seed and span count that fit their bits of `ordered` (else ids would repeat silently).
    pub fn checked(self) -> anyhow::Result<Shape> {
        if self.spans < 1 {
            anyhow::bail!("--spans-per-trace must be at least 1");
        }
        if self.ordered_ids && (self.spans > 256 || self.seed > 0xffff) {
            anyhow::bail!("--ordered-ids takes at most 256 spans per trace and seeds below 65536");
        }
        Ok(self)
    }

    /// The seed in the top 16 bits (runs differ), then the trace's index, then the span.
    fn ordered(&self, index: u64, span: usize) -> u64 {
        (self.seed << 48) | ((index & ((1 << 40) - 1)) << 8) | (span as u64 & 0xff)
    }

    pub fn user(&self, index: u64) -> String {
        format!("user-{:04}", self.session_index(index) % USERS)
    }

    fn session_index(&self, index: u64) -> u64 {
        index / TRACES_PER_SESSION
    }

    /// Whether generation `span` (1-based) of trace `index` carries the rare / uncommon word.
    /// Counted over generations only (the root span carries none), so every `every`-th
    /// generation has it whatever the number of spans per trace.
    pub fn planted(&self, index: u64, span: usize, every: u64) -> bool {
        let generations = self.spans.saturating_sub(1) as u64;
        if span == 0 || generations == 0 {
            return false;
        }
        let n = index * generations + span as u64 - 1;
        n % every == every / 2
    }

    /// Generations that carry `every`'s word among the first `traces` traces.
    pub fn planted_count(&self, traces: u64, every: u64) -> u64 {
        (0..traces)
            .flat_map(|t| (1..self.spans).map(move |s| (t, s)))
            .filter(|&(t, s)| self.planted(t, s, every))
            .count() as u64
    }

    pub fn trace(&self, index: u64) -> TraceData {
        let mut rng = Rng::new(mix(&[self.seed, index, u64::MAX - 1]));
        let trace_id = self.trace_id(index);
        let name = TRACE_NAMES[rng.below(TRACE_NAMES.len() as u64) as usize];
        let user = self.user(index);
        let session = format!(
            "sess-{:08x}-{}",
            self.seed as u32,
            self.session_index(index)
        );
        let start = self.start_micros + index as i64 * self.step_micros;
        let root_id = self.span_id(index, 0);
        let words = 12 + rng.below(12) as usize;
        let question = text(&mut rng, words, &[&self.run_tag]);
        let mut spans = Vec::with_capacity(self.spans);
        let mut at = start + 1_000;
        for g in 1..self.spans {
            let model = pick_model(&mut rng);
            let mut plant: Vec<&str> = vec![&self.run_tag];
            if self.planted(index, g, RARE_EVERY) {
                plant.push(RARE_WORD);
            }
            if self.planted(index, g, UNCOMMON_EVERY) {
                plant.push(UNCOMMON_WORD);
            }
            let system = rng.pick(&SYSTEM_PROMPTS);
            let budget = self.payload_bytes.saturating_sub(system.len());
            let user_text = text_bytes(&mut rng, budget * 11 / 20, &plant);
            let answer = text_bytes(&mut rng, budget * 9 / 20, &[]);
            let duration = 200_000 + rng.below(2_800_000) as i64;
            let input_tokens = (system.len() + user_text.len()) as u64 / 4;
            let output_tokens = answer.len() as u64 / 4;
            spans.push(SpanData {
                span_id: self.span_id(index, g),
                parent: Some(root_id),
                name: GENERATION_NAMES[(g - 1) % GENERATION_NAMES.len()],
                model: Some(model),
                start_micros: at,
                end_micros: at + duration,
                input: json!([
                    {"role": "system", "content": system},
                    {"role": "user", "content": user_text},
                ]),
                output: json!({"role": "assistant", "content": answer}),
                usage: Some((input_tokens, output_tokens)),
                metadata: json!({"temperature": 0.2, "attempt": 1 + rng.below(2)}),
            });
            at += duration + 5_000;
        }
        let root = SpanData {
            span_id: root_id,
            parent: None,
            name,
            model: None,
            start_micros: start,
            end_micros: at + 1_000,
            input: json!({"question": question}),
            output: json!({"answer": text(&mut rng, 10, &[])}),
            usage: None,
            metadata: json!({
                "region": rng.pick(&REGIONS),
                "app_version": format!("1.{}.{}", rng.below(5), rng.below(20)),
                "request_id": format!("{:016x}", rng.next()),
            }),
        };
        spans.insert(0, root);
        TraceData {
            trace_id,
            name,
            user,
            session,
            spans,
        }
    }
}

/// One well-mixed value from several: ids of different seeds, traces and spans never collide
/// by construction (a plain XOR of the parts would: seed 1 span 3 = seed 2 span 0).
fn mix(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x243F_6A88_85A3_08D3, |acc, &p| Rng::new(acc ^ p).next())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn pick_model(rng: &mut Rng) -> &'static str {
    let total: u32 = MODELS.iter().map(|(_, w)| w).sum();
    let mut roll = rng.below(u64::from(total)) as u32;
    for (model, weight) in MODELS {
        if roll < weight {
            return model;
        }
        roll -= weight;
    }
    MODELS[0].0
}

/// One word: most from the language's head list, the rest from a long synthetic tail whose
/// frequencies fall off like natural text (log-uniform rank).
fn word(rng: &mut Rng, lang: u64, out: &mut String) {
    match lang {
        0..=6 if rng.below(10) < 6 => out.push_str(rng.pick(EN)),
        0..=6 => {
            let rank = (TAIL_WORDS as f64).powf(rng.unit()) as u64;
            let mut n = rank;
            loop {
                out.push_str(SYLLABLES[(n % SYLLABLES.len() as u64) as usize]);
                n /= SYLLABLES.len() as u64;
                if n == 0 {
                    break;
                }
            }
        }
        7 | 8 => out.push_str(rng.pick(DE)),
        9 => out.push_str(rng.pick(ZH)),
        _ => out.push_str(rng.pick(AR)),
    }
}

/// About `bytes` bytes of text in one language (70 % English), with `plant` words at random
/// positions.
fn text_bytes(rng: &mut Rng, bytes: usize, plant: &[&str]) -> String {
    let lang = rng.below(11);
    let mut out = String::with_capacity(bytes + 16);
    let mut positions: Vec<usize> = plant.iter().map(|_| rng.below(200) as usize).collect();
    let mut i = 0;
    while out.len() < bytes.max(8) {
        if !out.is_empty() {
            out.push(if rng.below(12) == 0 { '.' } else { ' ' });
            if out.ends_with('.') {
                out.push(' ');
            }
        }
        if let Some(p) = positions.iter().position(|&p| p <= i) {
            out.push_str(plant[p]);
            positions[p] = usize::MAX;
        } else {
            word(rng, lang, &mut out);
        }
        i += 1;
    }
    for (p, w) in positions.iter().zip(plant) {
        if *p != usize::MAX {
            out.push(' ');
            out.push_str(w);
        }
    }
    out
}

fn text(rng: &mut Rng, words: usize, plant: &[&str]) -> String {
    text_bytes(rng, words * 6, plant)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            seed: 7,
            spans: 4,
            payload_bytes: 1024,
            start_micros: 1_700_000_000_000_000,
            step_micros: 1_000,
            run_tag: "runtag1".into(),
            ordered_ids: false,
        }
    }

    #[test]
    fn traces_are_reproducible_and_sized() {
        let s = shape();
        let a = s.trace(42);
        let b = s.trace(42);
        assert_eq!(a.trace_id, b.trace_id);
        assert_eq!(a.spans.len(), 4);
        assert_eq!(a.spans[1].input, b.spans[1].input);
        let g = &a.spans[1];
        let bytes = g.input.to_string().len() + g.output.to_string().len();
        assert!((900..1300).contains(&bytes), "payload {bytes} bytes");
        assert!(g.input.to_string().contains("runtag1"));
    }

    #[test]
    fn ids_differ_across_seeds_traces_and_spans() {
        for ordered_ids in [false, true] {
            let mut seen = std::collections::HashSet::new();
            for seed in 1..4 {
                let s = Shape {
                    seed,
                    ordered_ids,
                    ..shape()
                };
                for t in 0..200 {
                    assert!(seen.insert(s.trace_id(t).to_vec()));
                    for span in 0..4 {
                        assert!(seen.insert(s.span_id(t, span).to_vec()));
                    }
                }
            }
        }
    }

    #[test]
    fn ordered_ids_refuse_shapes_whose_ids_would_repeat() {
        let ordered = |seed, spans| Shape {
            seed,
            spans,
            ordered_ids: true,
            ..shape()
        };
        assert!(ordered(7, 256).checked().is_ok());
        assert!(ordered(0xffff, 4).checked().is_ok());
        assert!(ordered(7, 257).checked().is_err());
        assert!(ordered(0x1_0000, 4).checked().is_err());
        assert!(
            Shape {
                spans: 0,
                ..shape()
            }
            .checked()
            .is_err()
        );
        // Random ids have no such limits.
        assert!(
            Shape {
                spans: 1000,
                seed: u64::MAX,
                ..shape()
            }
            .checked()
            .is_ok()
        );
    }

    #[test]
    fn ordered_ids_grow_with_the_trace() {
        let s = Shape {
            ordered_ids: true,
            ..shape()
        };
        let ids: Vec<[u8; 16]> = (0..300).map(|t| s.trace_id(t)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let spans: Vec<[u8; 8]> = (0..300)
            .flat_map(|t| (0..4).map(move |span| (t, span)))
            .map(|(t, span)| s.span_id(t, span))
            .collect();
        assert!(spans.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn planted_words_appear_where_counted() {
        let s = shape();
        let traces = 3_000;
        let mut found = 0;
        for t in 0..traces {
            for span in &s.trace(t).spans[1..] {
                if span.input.to_string().contains(UNCOMMON_WORD) {
                    found += 1;
                }
            }
        }
        assert_eq!(found, s.planted_count(traces, UNCOMMON_EVERY));
        assert_eq!(found, 90);
    }
}
