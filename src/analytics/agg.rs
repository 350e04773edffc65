//! The aggregate every rollup row holds, what one record contributes to it, and its binary row
//! encoding.
//!
//! Everything is an integer so that adding a contribution and later subtracting it leaves the
//! row exactly as it was (floating-point sums would drift): costs are femto-USD (1e-15), times
//! are microseconds, latencies are counted in fixed logarithmic buckets.

use std::collections::BTreeMap;

use crate::record::{ObservationRecord, TraceRecord};
use crate::store::StoreError;

/// Cost unit of rollups: 1e-15 USD. Prices go down to ~1e-9 per token, so this keeps every
/// per-observation cost exact to well below a millionth of a cent.
pub const FEMTO_PER_USD: f64 = 1e15;

/// Latency buckets: bucket 0 holds [0, 1 ms); bucket i ≥ 1 holds [2^((i-1)/4), 2^(i/4)) ms, a
/// ~19 % step, so a percentile read from the buckets is within ~9 % of the true value. The last
/// bucket also holds everything longer (2^(94/4) ms ≈ 3.7 hours).
pub const HIST_BUCKETS: u8 = 96;
const STEPS_PER_DOUBLING: f64 = 4.0;

/// Counts of durations in fixed logarithmic buckets, with their exact sum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hist {
    pub count: i64,
    pub sum_us: i64,
    /// Bucket index → count; zero counts are never stored.
    pub buckets: BTreeMap<u8, i64>,
}

impl Hist {
    pub fn bucket_of(us: i64) -> u8 {
        let ms = us.max(0) as f64 / 1000.0;
        if ms < 1.0 {
            return 0;
        }
        let i = (ms.log2() * STEPS_PER_DOUBLING).floor() as i64 + 1;
        i.clamp(1, i64::from(HIST_BUCKETS) - 1) as u8
    }

    /// Lower and upper edge of a bucket in milliseconds (the last bucket's upper edge is its
    /// nominal one; it also holds longer durations).
    pub fn bounds_ms(bucket: u8) -> (f64, f64) {
        if bucket == 0 {
            return (0.0, 1.0);
        }
        let lo = 2f64.powf(f64::from(bucket - 1) / STEPS_PER_DOUBLING);
        let hi = 2f64.powf(f64::from(bucket) / STEPS_PER_DOUBLING);
        (lo, hi)
    }

    pub fn single(us: i64) -> Hist {
        let us = us.max(0);
        Hist {
            count: 1,
            sum_us: us,
            buckets: BTreeMap::from([(Self::bucket_of(us), 1)]),
        }
    }

    fn add(&mut self, other: &Hist, sign: i64) {
        acc(&mut self.count, sign, other.count);
        acc(&mut self.sum_us, sign, other.sum_us);
        for (b, n) in &other.buckets {
            let slot = self.buckets.entry(*b).or_insert(0);
            acc(slot, sign, *n);
            if *slot == 0 {
                self.buckets.remove(b);
            }
        }
    }

    fn is_zero(&self) -> bool {
        self.count == 0 && self.sum_us == 0 && self.buckets.is_empty()
    }

    /// The `q`-quantile (0..=1) in milliseconds, interpolated inside the bucket it falls in.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: i64 = self.buckets.values().sum();
        if total <= 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0.0;
        for (b, n) in &self.buckets {
            let n = *n as f64;
            if seen + n >= rank {
                let (lo, hi) = Self::bounds_ms(*b);
                let within = if n > 0.0 { (rank - seen) / n } else { 0.0 };
                // Geometric interpolation matches the logarithmic bucket spacing.
                return Some(if *b == 0 {
                    lo + (hi - lo) * within
                } else {
                    lo * (hi / lo).powf(within)
                });
            }
            seen += n;
        }
        self.buckets.keys().last().map(|b| Self::bounds_ms(*b).1)
    }
}

/// What a rollup row (or one record) adds up to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Agg {
    /// Traces: in trace rows the traces of the bucket; in per-model day rows the distinct traces
    /// with an observation of that model that day; zero elsewhere.
    pub traces: i64,
    pub observations: i64,
    /// Observations naming a model that matched no price and that carried no cost of their own:
    /// reported so a missing price shows up instead of silently costing $0.
    pub unpriced: i64,
    /// Observations whose usage was counted by the tokenizer fallback.
    pub estimated: i64,
    /// Observations with a total cost (the denominator of an average cost).
    pub costed: i64,
    /// Femto-USD: cost keys containing "input", containing "output", and the `total` key.
    pub input_cost: i128,
    pub output_cost: i128,
    pub total_cost: i128,
    /// Units by usage key, as stored in `usage_details`.
    pub usage: BTreeMap<String, i64>,
    /// Start → end, for observations with an end time.
    pub latency: Hist,
    /// Start → completion start, for observations with one.
    pub ttft: Hist,
}

/// Adds `sign × v` to a row field. Wrapping, so that adding a contribution and later subtracting
/// it restores the row exactly even for absurd client-reported numbers, and no number a client
/// sends can panic the writer.
fn acc(slot: &mut i64, sign: i64, v: i64) {
    *slot = slot.wrapping_add(sign.wrapping_mul(v));
}

/// USD to femto-USD, rounded; the one conversion every sum uses, so sums are reproducible.
pub fn femto(usd: f64) -> i128 {
    if !usd.is_finite() {
        return 0;
    }
    (usd * FEMTO_PER_USD).round() as i128
}

pub fn usd(femto: i128) -> f64 {
    femto as f64 / FEMTO_PER_USD
}

/// Langfuse's token measures: keys containing "input" / "output" (case-insensitive).
fn key_has(key: &str, needle: &str) -> bool {
    key.to_ascii_lowercase().contains(needle)
}

/// True when the observation names a model, no price matched it, and the client sent no cost:
/// its cost is unknown, not zero.
pub fn is_unpriced(o: &ObservationRecord) -> bool {
    o.model.as_deref().is_some_and(|m| !m.is_empty())
        && o.pricing.is_none()
        && o.cost_details.is_empty()
}

impl Agg {
    /// One observation's contribution (without trace counts).
    pub fn of_observation(o: &ObservationRecord) -> Agg {
        let cost_where = |f: &dyn Fn(&str) -> bool| -> i128 {
            o.cost_details
                .iter()
                .filter(|(k, _)| f(k))
                .map(|(_, v)| femto(*v))
                .fold(0, i128::saturating_add)
        };
        let start = o.start_time.micros();
        Agg {
            traces: 0,
            observations: 1,
            unpriced: i64::from(is_unpriced(o)),
            estimated: i64::from(o.usage_estimated),
            costed: i64::from(o.cost_details.contains_key("total")),
            input_cost: cost_where(&|k| key_has(k, "input")),
            output_cost: cost_where(&|k| key_has(k, "output")),
            total_cost: o.cost_details.get("total").map_or(0, |c| femto(*c)),
            usage: o
                .usage_details
                .iter()
                .map(|(k, v)| (k.clone(), i64::try_from(*v).unwrap_or(i64::MAX)))
                .collect(),
            latency: o
                .end_time
                .map(|e| Hist::single(e.micros().saturating_sub(start)))
                .unwrap_or_default(),
            ttft: o
                .completion_start_time
                .map(|c| Hist::single(c.micros().saturating_sub(start)))
                .unwrap_or_default(),
        }
    }

    /// A trace's contribution: itself plus the sum of its observations (`totals`).
    pub fn of_trace(_t: &TraceRecord, totals: &Agg) -> Agg {
        let mut a = totals.clone();
        // Trace rows carry no observation histograms: trace latency is not a sum.
        a.latency = Hist::default();
        a.ttft = Hist::default();
        a.traces = 1;
        a
    }

    pub fn add(&mut self, other: &Agg) {
        self.add_signed(other, 1);
    }

    pub fn sub(&mut self, other: &Agg) {
        self.add_signed(other, -1);
    }

    fn add_signed(&mut self, o: &Agg, sign: i64) {
        acc(&mut self.traces, sign, o.traces);
        acc(&mut self.observations, sign, o.observations);
        acc(&mut self.unpriced, sign, o.unpriced);
        acc(&mut self.estimated, sign, o.estimated);
        acc(&mut self.costed, sign, o.costed);
        let s = i128::from(sign);
        self.input_cost = self.input_cost.wrapping_add(s.wrapping_mul(o.input_cost));
        self.output_cost = self.output_cost.wrapping_add(s.wrapping_mul(o.output_cost));
        self.total_cost = self.total_cost.wrapping_add(s.wrapping_mul(o.total_cost));
        for (k, v) in &o.usage {
            let slot = self.usage.entry(k.clone()).or_insert(0);
            acc(slot, sign, *v);
            if *slot == 0 {
                self.usage.remove(k);
            }
        }
        self.latency.add(&o.latency, sign);
        self.ttft.add(&o.ttft, sign);
    }

    pub fn is_zero(&self) -> bool {
        self.traces == 0
            && self.observations == 0
            && self.unpriced == 0
            && self.estimated == 0
            && self.costed == 0
            && self.input_cost == 0
            && self.output_cost == 0
            && self.total_cost == 0
            && self.usage.is_empty()
            && self.latency.is_zero()
            && self.ttft.is_zero()
    }

    /// Units of the usage keys containing `needle` ("input", "output"), case-insensitive.
    pub fn usage_containing(&self, needle: &str) -> i64 {
        self.usage
            .iter()
            .filter(|(k, _)| key_has(k, needle))
            .map(|(_, v)| *v)
            .fold(0, i64::saturating_add)
    }

    pub fn usage_key(&self, key: &str) -> i64 {
        self.usage.get(key).copied().unwrap_or(0)
    }
}

/// Row formats. 1: fixed-width integers (~230 bytes a row); 2: zigzag LEB128 varints (~60), the
/// rollups' counts and sums being small numbers almost always. Both are read; 2 is written.
const FORMAT_FIXED: u8 = 1;
const FORMAT: u8 = 2;

impl Agg {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + self.usage.len() * 16);
        self.encode_into(&mut out);
        out
    }

    /// Appends the row to `out`, so a larger value (a trace's rollup state) can embed it.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(FORMAT);
        for v in [
            self.traces,
            self.observations,
            self.unpriced,
            self.estimated,
            self.costed,
        ] {
            put_ivar(out, v.into());
        }
        for v in [self.input_cost, self.output_cost, self.total_cost] {
            put_ivar(out, v);
        }
        for h in [&self.latency, &self.ttft] {
            put_ivar(out, h.count.into());
            put_ivar(out, h.sum_us.into());
            put_uvar(out, h.buckets.len() as u128);
            for (b, n) in &h.buckets {
                out.push(*b);
                put_ivar(out, (*n).into());
            }
        }
        put_uvar(out, self.usage.len() as u128);
        for (k, v) in &self.usage {
            put_str(out, k);
            put_ivar(out, (*v).into());
        }
    }

    /// Decodes a whole row: bytes after it are corruption, not slack.
    pub fn decode(bytes: &[u8]) -> Result<Agg, StoreError> {
        let mut r = Reader(bytes);
        let a = Agg::read(&mut r)?;
        r.finish("rollup row")?;
        Ok(a)
    }

    /// Reads one row from the front of `r`.
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Agg, StoreError> {
        match r.u8()? {
            FORMAT => Agg::read_varint(r),
            FORMAT_FIXED => Agg::read_fixed(r),
            version => Err(StoreError::Corrupt(format!(
                "rollup row has format {version}, expected {FORMAT}"
            ))),
        }
    }

    fn read_varint(r: &mut Reader<'_>) -> Result<Agg, StoreError> {
        let mut a = Agg {
            traces: r.i64var()?,
            observations: r.i64var()?,
            unpriced: r.i64var()?,
            estimated: r.i64var()?,
            costed: r.i64var()?,
            input_cost: r.ivar()?,
            output_cost: r.ivar()?,
            total_cost: r.ivar()?,
            ..Agg::default()
        };
        for h in [&mut a.latency, &mut a.ttft] {
            h.count = r.i64var()?;
            h.sum_us = r.i64var()?;
            for _ in 0..r.len()? {
                let b = r.u8()?;
                h.buckets.insert(b, r.i64var()?);
            }
        }
        for _ in 0..r.len()? {
            let key = r.string()?;
            a.usage.insert(key, r.i64var()?);
        }
        Ok(a)
    }

    fn read_fixed(r: &mut Reader<'_>) -> Result<Agg, StoreError> {
        let mut a = Agg {
            traces: r.i64()?,
            observations: r.i64()?,
            unpriced: r.i64()?,
            estimated: r.i64()?,
            costed: r.i64()?,
            input_cost: r.i128()?,
            output_cost: r.i128()?,
            total_cost: r.i128()?,
            ..Agg::default()
        };
        for h in [&mut a.latency, &mut a.ttft] {
            h.count = r.i64()?;
            h.sum_us = r.i64()?;
            for _ in 0..r.u8()? {
                let b = r.u8()?;
                h.buckets.insert(b, r.i64()?);
            }
        }
        for _ in 0..r.u16()? {
            let len = usize::from(r.u16()?);
            let key = r.str(len)?;
            a.usage.insert(key, r.i64()?);
        }
        Ok(a)
    }
}

/// A string, length first (`Reader::string` reads it).
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uvar(out, s.len() as u128);
    out.extend_from_slice(s.as_bytes());
}

/// LEB128: seven bits a byte, low bits first, high bit set on every byte but the last.
pub(crate) fn put_uvar(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Zigzag first, so small negative numbers (subtracted contributions) stay short too.
pub(crate) fn put_ivar(out: &mut Vec<u8>, v: i128) {
    put_uvar(out, ((v << 1) ^ (v >> 127)) as u128);
}

/// A cursor over a stored value; every read fails with `Corrupt` instead of running past the end.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.0.len() < n {
            return Err(StoreError::Corrupt("rollup row is truncated".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn finish(&self, what: &str) -> Result<(), StoreError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Corrupt(format!(
                "{what} has {} bytes after its end",
                self.0.len()
            )))
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, StoreError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, StoreError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn i128(&mut self) -> Result<i128, StoreError> {
        Ok(i128::from_le_bytes(self.array()?))
    }

    pub(crate) fn str(&mut self, len: usize) -> Result<String, StoreError> {
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| StoreError::Corrupt("rollup row holds a string that is not utf-8".into()))
    }

    pub(crate) fn uvar(&mut self) -> Result<u128, StoreError> {
        let mut v: u128 = 0;
        for shift in (0..128).step_by(7) {
            let b = self.u8()?;
            let bits = u128::from(b & 0x7f);
            if shift == 126 && bits > 0b11 {
                break;
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(StoreError::Corrupt(
            "rollup row holds an overlong number".into(),
        ))
    }

    pub(crate) fn ivar(&mut self) -> Result<i128, StoreError> {
        let u = self.uvar()?;
        Ok(((u >> 1) as i128) ^ -((u & 1) as i128))
    }

    pub(crate) fn i64var(&mut self) -> Result<i64, StoreError> {
        i64::try_from(self.ivar()?)
            .map_err(|_| StoreError::Corrupt("rollup row holds a count out of range".into()))
    }

    /// A length or an element count: at most what is left to read, so a corrupt count cannot
    /// make a decoder loop for long.
    pub(crate) fn len(&mut self) -> Result<usize, StoreError> {
        match usize::try_from(self.uvar()?) {
            Ok(n) if n <= self.0.len() => Ok(n),
            _ => Err(StoreError::Corrupt("rollup row is truncated".into())),
        }
    }

    /// A string written by `put_str`.
    pub(crate) fn string(&mut self) -> Result<String, StoreError> {
        let len = self.len()?;
        self.str(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_contributions_add_and_subtract_back_exactly() {
        let huge = Agg {
            observations: 1,
            input_cost: femto(1e308),
            total_cost: i128::MAX,
            usage: BTreeMap::from([("input".into(), i64::MAX), ("output".into(), i64::MIN)]),
            latency: Hist::single(i64::MAX),
            ..Agg::default()
        };
        let mut row = Agg {
            observations: 7,
            usage: BTreeMap::from([("input".into(), 10)]),
            ..Agg::default()
        };
        let before = row.clone();
        for _ in 0..3 {
            row.add(&huge);
        }
        let _ = row.usage_containing("put");
        for _ in 0..3 {
            row.sub(&huge);
        }
        assert_eq!(row, before);
    }

    #[test]
    fn rows_round_trip_and_reject_garbage() {
        let mut a = Agg {
            traces: 2,
            observations: 3,
            unpriced: 1,
            total_cost: femto(0.0075),
            usage: BTreeMap::from([("input".into(), 1000), ("output".into(), 500)]),
            latency: Hist::single(1_500_000),
            ..Agg::default()
        };
        a.ttft = Hist::single(200);
        assert_eq!(Agg::decode(&a.encode()).unwrap(), a);
        assert!(Agg::decode(&[]).is_err());
        assert!(Agg::decode(&[9]).is_err());
        assert!(Agg::decode(&a.encode()[..20]).is_err());
    }

    /// Rows written before the varint format (fixed-width integers) still read back.
    #[test]
    fn fixed_width_rows_still_decode() {
        let mut b = vec![FORMAT_FIXED];
        for v in [2i64, 3, 1, 0, 1] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for v in [0i128, -5, femto(0.0075)] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        // Latency: one observation of 1.5 s; no time to first token.
        b.extend_from_slice(&1i64.to_le_bytes());
        b.extend_from_slice(&1_500_000i64.to_le_bytes());
        b.extend_from_slice(&[1, Hist::bucket_of(1_500_000)]);
        b.extend_from_slice(&1i64.to_le_bytes());
        b.extend_from_slice(&0i64.to_le_bytes());
        b.extend_from_slice(&0i64.to_le_bytes());
        b.push(0);
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&5u16.to_le_bytes());
        b.extend_from_slice(b"input");
        b.extend_from_slice(&1000i64.to_le_bytes());
        let a = Agg::decode(&b).unwrap();
        assert_eq!(
            a,
            Agg {
                traces: 2,
                observations: 3,
                unpriced: 1,
                costed: 1,
                output_cost: -5,
                total_cost: femto(0.0075),
                usage: BTreeMap::from([("input".into(), 1000)]),
                latency: Hist::single(1_500_000),
                ..Agg::default()
            }
        );
    }

    #[test]
    fn varint_rows_keep_extremes_and_are_small() {
        let a = Agg {
            traces: i64::MIN,
            observations: i64::MAX,
            unpriced: -1,
            input_cost: i128::MIN,
            output_cost: i128::MAX,
            total_cost: -femto(12.5),
            usage: BTreeMap::from([("input".into(), i64::MIN), ("".into(), 0)]),
            ttft: Hist::single(i64::MAX),
            ..Agg::default()
        };
        assert_eq!(Agg::decode(&a.encode()).unwrap(), a);
        let typical = Agg {
            traces: 1,
            observations: 4,
            costed: 3,
            input_cost: femto(0.0031),
            output_cost: femto(0.0062),
            total_cost: femto(0.0093),
            usage: BTreeMap::from([
                ("input".into(), 750),
                ("output".into(), 250),
                ("total".into(), 1000),
            ]),
            ..Agg::default()
        };
        let bytes = typical.encode();
        assert!(bytes.len() < 64, "{} bytes", bytes.len());
        assert_eq!(Agg::decode(&bytes).unwrap(), typical);
        // Trailing bytes, an overlong number and a count beyond the row are corruption.
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(Agg::decode(&trailing).is_err());
        let mut overlong = vec![FORMAT];
        overlong.extend([0xff; 20]);
        assert!(Agg::decode(&overlong).is_err());
        let mut huge_count = vec![FORMAT];
        huge_count.extend([0; 10]);
        huge_count.extend([0xff, 0xff, 0x03]);
        assert!(Agg::decode(&huge_count).is_err());
    }

    #[test]
    fn adding_then_subtracting_leaves_nothing() {
        let mut a = Agg::default();
        let b = Agg {
            observations: 1,
            input_cost: femto(0.1),
            usage: BTreeMap::from([("input".into(), 7)]),
            latency: Hist::single(12_345),
            ..Agg::default()
        };
        a.add(&b);
        a.sub(&b);
        assert!(a.is_zero(), "{a:?}");
    }

    #[test]
    fn buckets_are_logarithmic_and_quantiles_land_in_them() {
        assert_eq!(Hist::bucket_of(0), 0);
        assert_eq!(Hist::bucket_of(999), 0);
        assert_eq!(Hist::bucket_of(1_000), 1);
        assert_eq!(Hist::bucket_of(2_000), 5);
        assert_eq!(Hist::bucket_of(i64::MAX), HIST_BUCKETS - 1);
        let mut h = Hist::default();
        for ms in 1..=100 {
            h.add(&Hist::single(ms * 1000), 1);
        }
        let p50 = h.quantile_ms(0.5).unwrap();
        assert!((p50 - 50.0).abs() / 50.0 < 0.1, "p50 {p50}");
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((p99 - 99.0).abs() / 99.0 < 0.1, "p99 {p99}");
        assert_eq!(femto(0.0075), 7_500_000_000_000);
        assert_eq!(usd(femto(0.0075)), 0.0075);
    }
}
