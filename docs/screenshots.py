"""Takes the README's dashboard screenshots from a running Sightline holding demo data.

    python3 -m venv /tmp/shots && /tmp/shots/bin/pip install -r tests/python/requirements-browser.txt
    SIGHTLINE_DATA_DIR=/tmp/demo LANGFUSE_INIT_ORG_ID=demo LANGFUSE_INIT_PROJECT_ID=demo \
      LANGFUSE_INIT_PROJECT_PUBLIC_KEY=pk-lf-demo LANGFUSE_INIT_PROJECT_SECRET_KEY=sk-lf-demo \
      LANGFUSE_INIT_USER_EMAIL=demo@example.com LANGFUSE_INIT_USER_PASSWORD=demo-password \
      cargo run --release &
    /tmp/shots/bin/python docs/screenshots.py http://127.0.0.1:3000

It seeds a week of made-up support-bot traffic (several models, users, sessions, one error, an
in-house model without a price) through the public ingestion API, logs in with Debian's
headless Chromium and writes docs/dashboard-*.png. Nothing here is part of the product.
"""

import base64
import json
import random
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

BASE = sys.argv[1].rstrip("/") if len(sys.argv) > 1 else "http://127.0.0.1:3000"
AUTH = "Basic " + base64.b64encode(b"pk-lf-demo:sk-lf-demo").decode()
OUT = Path(__file__).resolve().parent

QUESTIONS = [
    ("Where is my order #4411?", "It left our warehouse yesterday and arrives on Thursday."),
    ("Can I change the delivery address?", "Yes, until it ships. I have updated it to the new address."),
    ("Do you ship to Norway?", "We do: 3 to 5 working days, duties included."),
    ("How do I return a jacket that is too small?", "Print the label from your account and drop it at any post office."),
    ("Is the blue kettle back in stock?", "It is back next week; I can notify you when it arrives."),
    ("My discount code SPRING10 does not work.", "That code expired on Sunday; here is a new one: SPRING12."),
]
MODELS = [("gpt-4o", 0.45), ("gpt-4o-mini", 0.35), ("claude-3-5-sonnet-20241022", 0.15), ("support-llm-v2", 0.05)]
USERS = ["maria", "jonas", "aiko", "omar", "lea", "sam", "priya"]


def iso(t):
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def post(path, body):
    req = urllib.request.Request(BASE + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": AUTH})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status


def seed():
    rng = random.Random(7)
    now = datetime.now(timezone.utc)
    events = []
    shown = None  # the trace the detail screenshot opens: a priced gpt-4o answer
    for i in range(140):
        start = now - timedelta(minutes=rng.randint(5, 7 * 24 * 60))
        user = rng.choice(USERS)
        q, a = rng.choice(QUESTIONS)
        model = rng.choices([m for m, _ in MODELS], [w for _, w in MODELS])[0]
        trace = f"demo-{i}"
        if shown is None and model == "gpt-4o" and i != 17:
            shown = trace
        latency = rng.uniform(0.6, 3.5)
        ttft = rng.uniform(0.15, 0.6)
        inp, out = rng.randint(300, 2400), rng.randint(40, 400)
        messages = [{"role": "system", "content": "You are the support assistant of a small web shop."},
                    {"role": "user", "content": q}]
        ev = lambda kind, body: {"id": str(uuid.uuid4()), "type": kind, "timestamp": iso(start), "body": body}
        events += [
            ev("trace-create", {"id": trace, "name": "support-chat", "timestamp": iso(start), "userId": user,
                                "sessionId": f"{user}-{start:%Y%m%d}", "tags": ["support", "web"],
                                "input": messages, "output": {"role": "assistant", "content": a}}),
            ev("span-create", {"id": trace + "-r", "traceId": trace, "name": "retrieve-orders",
                               "startTime": iso(start), "endTime": iso(start + timedelta(seconds=0.2))}),
            ev("generation-create", {
                "id": trace + "-g", "traceId": trace, "name": "answer", "model": model,
                "modelParameters": {"temperature": 0.2, "max_tokens": 500},
                "startTime": iso(start + timedelta(seconds=0.2)),
                "completionStartTime": iso(start + timedelta(seconds=0.2 + ttft)),
                "endTime": iso(start + timedelta(seconds=0.2 + latency)),
                "usageDetails": {"input": inp, "output": out}, "input": messages,
                "output": {"role": "assistant", "content": a},
                **({"level": "ERROR", "statusMessage": "upstream timeout after 30 s"} if i == 17 else {})}),
        ]
    for k in range(0, len(events), 150):
        assert post("/api/public/ingestion", {"batch": events[k:k + 150]}) == 207
    return shown


def main():
    trace = seed()
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,860", f"--user-data-dir={tempfile.mkdtemp()}"]:
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=opts)
    wait = lambda css: WebDriverWait(d, 30).until(lambda d: d.find_element(By.CSS_SELECTOR, css))
    try:
        d.get(BASE + "/")
        wait("#login-form input[type=email]").send_keys("demo@example.com")
        d.find_element(By.CSS_SELECTOR, "#login-form input[type=password]").send_keys("demo-password")
        d.find_element(By.CSS_SELECTOR, "#login-form button").click()
        wait("[data-testid=total-traces]")
        time.sleep(1)
        d.save_screenshot(str(OUT / "dashboard-overview.png"))
        d.get(BASE + f"/#/p/demo/traces/{trace}/observations/{trace}-g")
        wait("[data-testid=gen-cost]")
        time.sleep(0.5)
        d.save_screenshot(str(OUT / "dashboard-trace.png"))
        d.get(BASE + "/#/p/demo/traces?range=7d")
        wait("tr[data-trace-id]")
        time.sleep(0.5)
        d.save_screenshot(str(OUT / "dashboard-traces.png"))
    finally:
        d.quit()


if __name__ == "__main__":
    main()
