#!/usr/bin/env python3
"""Medians of a bench/run.sh results directory, as the Markdown tables in BENCHMARKS.md."""

import json
import statistics
import sys
from pathlib import Path


def lines(path):
    if not path.exists():
        return []
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def table(title, groups, names, fields):
    """One Markdown table: a column per group (in `names` order), a row per (title, f, digits)."""
    print(f"## {title}\n")
    print("| measure | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for row, f, digits in fields:
        print(f"| {row} | " + " | ".join(fmt(f(groups[n]), digits) for n in names) + " |")


def label(r):
    return r["server"] + " " + r["format"] + ("+gzip" if r.get("gzip") else "")


def compare(out):
    rows = [r for r in lines(out / "compare.jsonl") if "spans_sent" in r]
    if not rows:
        return
    groups = {}
    for r in rows:
        groups.setdefault(label(r), []).append(r)
    fields = [
        ("runs", lambda rs: len(rs), 0),
        ("spans per run", lambda rs: med([r["spans_sent"] for r in rs]), 0),
        ("requests failed", lambda rs: sum(r["requests_failed"] for r in rs), 0),
        ("accepted spans/s", lambda rs: med([r["spans_per_sec_accepted"] for r in rs]), 0),
        ("stored spans/s", lambda rs: med([r["spans_per_sec_stored"] for r in rs]), 0),
        ("request p50 ms", lambda rs: med([r["request_p50_ms"] for r in rs]), 1),
        ("request p99 ms", lambda rs: med([r["request_p99_ms"] for r in rs]), 1),
        ("searchable after last ack, ms", lambda rs: med([r.get("searchable_after_last_ack_ms") for r in rs]), 0),
        ("server CPU µs per span", lambda rs: med([r.get("server_cpu_us_per_span") for r in rs]), 0),
        ("generator CPU µs per span", lambda rs: med([r.get("generator_cpu_us_per_span") for r in rs]), 0),
        ("RSS before MiB", lambda rs: med([r.get("rss_before_mib") for r in rs]), 1),
        ("RSS peak MiB", lambda rs: med([r.get("rss_peak_mib") for r in rs]), 1),
        ("  of it anonymous (heap) MiB", lambda rs: med([r.get("rss_peak_anon_mib") for r in rs]), 1),
        ("disk bytes per span", lambda rs: med([r.get("disk_bytes_per_span") for r in rs]), 0),
    ]
    table("Side by side (medians)", groups, sorted(groups), fields)
    starts = [r["start_to_healthy_ms"] for r in lines(out / "compare.jsonl") if "start_to_healthy_ms" in r]
    if starts:
        print(f"\nPhoenix start to healthy (empty store): median {fmt(med(starts))} ms over {len(starts)} starts")
    sl = groups.get("sightline otlp")
    px = groups.get("phoenix otlp")
    if sl and px:
        print("\nRatios, Sightline OTLP / Phoenix OTLP (medians of the same rounds):\n")
        for title, key, better in [
            ("stored spans/s", "spans_per_sec_stored", "higher"),
            ("server CPU per span", "server_cpu_us_per_span", "lower"),
            ("RSS peak", "rss_peak_mib", "lower"),
            ("disk per span", "disk_bytes_per_span", "lower"),
        ]:
            a, b = med([r.get(key) for r in sl]), med([r.get(key) for r in px])
            if a and b:
                print(f"- {title}: {a / b:.2f}× ({better} is better)")
    print()


def million(out):
    ingest = out / "million-ingest.json"
    if not ingest.exists() or not ingest.read_text().strip():
        return
    r = json.loads(ingest.read_text())
    print("## 1M observations\n")
    print(f"Ingest: {r['spans_sent']:,} spans, {r['requests_failed']} failed requests, "
          f"accepted {fmt(r['spans_per_sec_accepted'])} spans/s, stored {fmt(r['spans_per_sec_stored'])} spans/s, "
          f"searchable {fmt(r.get('searchable_after_last_ack_ms'))} ms after the last ack, "
          f"request p50 {fmt(r['request_p50_ms'], 1)} ms p99 {fmt(r['request_p99_ms'], 1)} ms, "
          f"server CPU {fmt(r.get('server_cpu_us_per_span'))} µs/span (generator {fmt(r.get('generator_cpu_us_per_span'))}), RSS peak {fmt(r.get('rss_peak_mib'), 1)} MiB "
          f"(anonymous {fmt(r.get('rss_peak_anon_mib'), 1)} MiB), "
          f"disk {fmt(r.get('disk_bytes_per_span'))} bytes/span")
    if r.get("server_cpu_seconds_by_thread"):
        split = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(r["server_cpu_seconds_by_thread"].items(), key=lambda kv: -kv[1]))
        print(f"\nServer CPU by thread: {split}")
    more = out / "million-ingest-more.json"
    if more.exists():
        m = json.loads(more.read_text())
        print(f"\nA further {m['spans_sent']:,} spans into the 1M store: stored {fmt(m['spans_per_sec_stored'])} spans/s, "
              f"searchable {fmt(m.get('searchable_after_last_ack_ms'))} ms after the last ack, "
              f"RSS peak {fmt(m.get('rss_peak_mib'), 1)} MiB")
    runs = lines(out / "million-query.jsonl")
    if runs:
        print(f"\n| query | p50 ms | p99 ms | first ms | answer |\n|---|---|---|---|---|")
        for i, q in enumerate(runs[0]):
            ps = [run[i] for run in runs]
            print(f"| {q['name']} | {fmt(med([p['p50_ms'] for p in ps]), 2)} | {fmt(med([p['p99_ms'] for p in ps]), 2)} "
                  f"| {fmt(med([p['first_ms'] for p in ps]), 2)} | {q['answer']} |")
        ns = sorted({q["n"] for run in runs for q in run})
        print(f"\n(medians over {len(runs)} runs; timed requests per query and run: {ns})")
    rss = out / "million-rss.json"
    if rss.exists():
        r = json.loads(rss.read_text())
        anon = r.get('idle_rss_anon_mib_after_queries')
        print(f"\nRSS after the queries (idle): {fmt(r['idle_rss_mib_after_queries'], 1)} MiB"
              + (f" (anonymous {fmt(anon, 1)} MiB)" if anon is not None else ""))
    disk = out / "million-disk.json"
    if disk.exists():
        d = json.loads(disk.read_text())
        db = d["database"]
        obs = next((t["rows"] for t in db["tables"] if t["table"] == "observations"), 0) or 1
        print(f"\nDisk: database file {db['file_bytes'] / 2**20:,.0f} MiB, search index "
              f"{d['searchIndexBytes'] / 2**20:,.0f} MiB = {d['searchIndexBytes'] / obs:,.0f} bytes per observation\n")
        print("| table | rows | bytes/row stored | B-tree overhead + unused bytes/row |\n|---|---|---|---|")
        for t in db["tables"][:10]:
            if t["rows"]:
                print(f"| {t['table']} | {t['rows']:,} | {t['stored_bytes'] / t['rows']:,.0f} | "
                      f"{(t['metadata_bytes'] + t['fragmented_bytes']) / t['rows']:,.0f} |")
        index = d.get("searchIndex") or {}
        if index.get("fields"):
            print(f"\nSearch index: {index['documents']:,} documents in {index['segments']} segments; "
                  "bytes per observation by field and part\n")
            print("| field | term dictionary | postings | positions | fast field | norms | total |\n"
                  "|---|---|---|---|---|---|---|")
            parts = ["termDictionary", "postings", "positions", "fastField", "norms", "total"]
            for f in index["fields"]:
                if f["total"] >= obs:
                    print(f"| {f['field']} | " + " | ".join(f"{f[p] / obs:,.1f}" for p in parts) + " |")
            print(f"| stored values | | | | | | {index['docStore'] / obs:,.1f} |")
    reindex = out / "million-reindex.json"
    if reindex.exists() and disk.exists():
        x = json.loads(reindex.read_text())
        docs = sum(t["rows"] for t in db["tables"] if t["table"] in ("observations", "traces"))
        print(f"\nSearch index rebuild (`sightline reindex`): {docs:,} documents in {x['reindex_ms'] / 1000:,.1f} s = "
              f"{docs / (x['reindex_ms'] / 1000):,.0f} documents/s; index afterwards "
              f"{x['search_index_bytes_after'] / 2**20:,.0f} MiB = {x['search_index_bytes_after'] / obs:,.0f} bytes per observation")
    start = out / "million-startup.json"
    if start.exists():
        s = json.loads(start.read_text())
        print(f"\nStart to healthy at 1M: median {fmt(s['median_healthy_ms'])} ms (runs {[round(x) for x in s['healthy_ms']]}), "
              f"idle RSS median {fmt(s['median_idle_rss_mib'], 1)} MiB"
              + (f" (anonymous {fmt(s['median_idle_rss_anon_mib'], 1)} MiB)" if 'median_idle_rss_anon_mib' in s else ""))
    print()


# Thread names of the server and of the probe, by part: (title, server prefixes, probe prefixes).
PARTS = [
    ("writer", ["sightline-write"], ["probe-writer"]),
    ("request threads (HTTP; the probe's parsing)", ["tokio-rt-worker"], ["probe-parse"]),
    ("indexer thread", ["sightline-searc"], ["probe-index"]),
    ("tantivy's indexing workers (ended threads)", ["(exited threads)"], ["(exited threads)"]),
    ("merges", ["merge_thread"], ["merge_thread"]),
]


def probe(out):
    rows = [r for r in lines(out / "probe.jsonl") if "spans_per_sec_stored" in r]
    if not rows:
        return
    groups = {}
    for r in rows:
        name = "sightline" if "server" in r else "probe, index " + r["index"]
        groups.setdefault(name, []).append(r)

    def spans(r):
        return r.get("spans_sent") or r.get("spans")

    def part(r, server, prober):
        threads = r.get("server_cpu_seconds_by_thread") or r.get("cpu_seconds_by_thread") or {}
        prefixes = server if "server" in r else prober
        secs = sum(v for k, v in threads.items() if any(k.startswith(p) for p in prefixes))
        return secs * 1e6 / spans(r)

    fields = [
        ("runs", lambda rs: len(rs), 0),
        ("spans per run", lambda rs: med([spans(r) for r in rs]), 0),
        ("stored spans/s", lambda rs: med([r["spans_per_sec_stored"] for r in rs]), 0),
        ("CPU µs per span (all but the generator)",
         lambda rs: med([r.get("server_cpu_us_per_span") or r.get("cpu_us_per_span") for r in rs]), 1),
    ] + [
        (f"  {title}", lambda rs, s=server, p=prober: med([part(r, s, p) for r in rs]), 1)
        for title, server, prober in PARTS
    ] + [
        ("disk bytes per span", lambda rs: med([r.get("disk_bytes_per_span") for r in rs]), 0),
    ]
    order = ["sightline", "probe, index positions", "probe, index text", "probe, index none"]
    names = sorted(groups, key=lambda n: order.index(n) if n in order else len(order))
    table("Sightline and the probe, side by side (medians)", groups, names, fields)
    print()


def main():
    out = Path(sys.argv[1])
    machine = out / "machine.txt"
    if machine.exists():
        print("```\n" + machine.read_text().strip() + "\n```\n")
    compare(out)
    million(out)
    probe(out)


if __name__ == "__main__":
    main()
