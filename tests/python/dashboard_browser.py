"""Drives the dashboard in Debian's headless Chromium (see tests/web_browser.rs).

Prints one JSON line: {"ok": true, ...} or {"ok": false, "failures": [...]}. Screenshots go to
$ARTIFACTS. Nothing here downloads a browser or driver: both paths come from the environment.
"""

import base64
import json
import os
import sys
import time
import traceback
import urllib.request
import uuid
from datetime import datetime, timezone

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

BASE = os.environ["BASE_URL"]
PROJECT = os.environ["PROJECT"]
ART = os.environ["ARTIFACTS"]
SEEDED = json.loads(os.environ["SEEDED"])
EXPECT = json.loads(os.environ["EXPECT"])
WAIT = 20

failures = []


def check(what, ok, got=None):
    if not ok:
        failures.append(f"{what}: got {got!r}")


def driver():
    # Selenium Manager must not try to fetch anything: both binaries are given explicitly.
    os.environ["SE_OFFLINE"] = "true"
    opts = webdriver.ChromeOptions()
    opts.binary_location = os.environ["CHROMIUM"]
    for arg in [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1280,860",
        f"--user-data-dir={os.environ['PROFILE_DIR']}",
    ]:
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=os.environ["CHROMEDRIVER"]), options=opts)


def route(*parts, query=""):
    from urllib.parse import quote
    h = "#/p/" + quote(PROJECT, safe="") + "/" + "/".join(quote(p, safe="") for p in parts)
    return h + ("?" + query if query else "")


def go(d, hash_route):
    d.execute_script("location.hash = arguments[0]", hash_route)


def wait_css(d, css, timeout=WAIT):
    return WebDriverWait(d, timeout).until(EC.presence_of_element_located((By.CSS_SELECTOR, css)))


def shot(d, name):
    time.sleep(0.2)
    d.save_screenshot(os.path.join(ART, f"{name}.png"))


def no_script_ran(d, where):
    state = d.execute_script("""
        return {
          pwned: window.__pwned === undefined ? null : String(window.__pwned),
          title: document.title,
          handlers: document.querySelectorAll('[onerror],[onload],[onclick],[onmouseover]').length,
          inlineScripts: document.querySelectorAll('script:not([src])').length,
          frames: document.querySelectorAll('iframe,object,embed').length,
          images: document.querySelectorAll('#app img').length,
          jsLinks: document.querySelectorAll('a[href^="javascript:" i]').length,
        };""")
    check(f"{where}: no payload ran", state["pwned"] is None and state["title"] == "Sightline", state)
    check(f"{where}: no markup from data", state["handlers"] == 0 and state["inlineScripts"] == 0
          and state["frames"] == 0 and state["images"] == 0 and state["jsLinks"] == 0, state)


def public_api(path, body=None):
    auth = base64.b64encode(f"{os.environ['PUBLIC_KEY']}:{os.environ['SECRET_KEY']}".encode()).decode()
    req = urllib.request.Request(BASE + path, data=None if body is None else json.dumps(body).encode(),
                                 method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json", "Authorization": "Basic " + auth})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, json.loads(r.read() or b"null")


def ingest(events):
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    batch = [{"id": str(uuid.uuid4()), "type": kind, "timestamp": now, "body": {"timestamp": now, **body}}
             for kind, body in events]
    status, _ = public_api("/api/public/ingestion", {"batch": batch})
    assert status == 207, status


def ingest_trace(trace_id):
    ingest([("trace-create", {"id": trace_id, "name": "arrived-live"})])


def run(d):
    # Login (a wrong password first).
    d.get(BASE + "/" + route("overview", query="range=all"))
    wait_css(d, "#login-form")
    check("title", d.title == "Sightline", d.title)
    d.find_element(By.NAME, "email").send_keys(os.environ["EMAIL"])
    d.find_element(By.NAME, "password").send_keys("wrong password")
    d.find_element(By.CSS_SELECTOR, "#login-form button").click()
    WebDriverWait(d, WAIT).until(lambda d: d.find_element(By.CSS_SELECTOR, "[data-testid=login-error]").text)
    shot(d, "login")
    pw = d.find_element(By.NAME, "password")
    pw.clear()
    pw.send_keys(os.environ["PASSWORD"])
    d.find_element(By.CSS_SELECTOR, "#login-form button").click()

    # Overview equals the public API.
    total = wait_css(d, "[data-testid=total-traces]")
    check("overview traces = API totalItems", int(total.get_attribute("data-value")) == EXPECT["traces"],
          total.get_attribute("data-value"))
    cost = float(d.find_element(By.CSS_SELECTOR, "[data-testid=total-cost]").get_attribute("data-value"))
    check("overview cost = sum of API totalCost", abs(cost - EXPECT["totalCost"]) < 1e-9, cost)
    check("model breakdown lists gpt-4o", bool(d.find_elements(By.CSS_SELECTOR, "tr[data-model='gpt-4o']")))
    check("unpriced model warning", bool(d.find_elements(By.CSS_SELECTOR, "[data-testid=unpriced]")))
    check("errors counted", int(d.find_element(By.CSS_SELECTOR, "[data-testid=total-errors]")
                                .get_attribute("data-value")) >= 2)
    no_script_ran(d, "overview")
    shot(d, "overview")

    # Search and filters.
    go(d, route("traces", query="range=all"))
    wait_css(d, "tr[data-trace-id]")
    box = d.find_element(By.CSS_SELECTOR, "#trace-filters input[name=q]")
    box.send_keys(os.environ["SEARCH_WORD"])
    d.find_element(By.CSS_SELECTOR, "#trace-filters button[type=submit]").click()
    WebDriverWait(d, WAIT).until(lambda d: "q=" in d.execute_script("return location.hash"))
    wait_css(d, f"tr[data-trace-id='{SEEDED['trace']}']")
    go(d, route("traces", query="range=all&name=checkout-flow"))
    WebDriverWait(d, WAIT).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr[data-trace-id]")) == 1)
    rows = [r.get_attribute("data-trace-id") for r in d.find_elements(By.CSS_SELECTOR, "tr[data-trace-id]")]
    check("name filter finds exactly the trace", rows == [SEEDED["trace"]], rows)

    def rows_when(pred):
        ids = lambda: [r.get_attribute("data-trace-id") for r in d.find_elements(By.CSS_SELECTOR, "tr[data-trace-id]")]
        try:
            WebDriverWait(d, WAIT).until(lambda d: pred(ids()))
        except Exception:
            pass
        return ids()

    # Highlights are rebuilt as text + <mark>, never parsed as HTML.
    word = os.environ["SEARCH_WORD"]
    go(d, route("traces", query="range=all&q=" + word))
    mark = wait_css(d, f"tr[data-trace-id='{SEEDED['trace']}'] mark")
    check("search word highlighted", mark.text.lower() == word.lower(), mark.text)
    # Model and level are observation properties, filtered through the index.
    go(d, route("traces", query="range=all&model=gpt-4o"))
    rows = rows_when(lambda ids: ids == [SEEDED["trace"]])
    check("model filter keeps the traces with that model", rows == [SEEDED["trace"]], rows)
    go(d, route("traces", query="range=all&level=ERROR"))
    rows = rows_when(lambda ids: SEEDED["xssTrace"] in ids and SEEDED["trace"] not in ids)
    check("level filter keeps the traces with an error", SEEDED["xssTrace"] in rows and SEEDED["trace"] not in rows, rows)
    go(d, route("traces", query="range=all&q=pwned"))
    wait_css(d, f"tr[data-trace-id='{SEEDED['xssTrace']}'] mark")
    no_script_ran(d, "search highlights")
    shot(d, "search")
    go(d, route("traces", query="range=all"))
    wait_css(d, f"tr[data-trace-id='{SEEDED['xssTrace']}']")
    check("input previews shown", "Where is my order?" in d.find_element(
        By.CSS_SELECTOR, f"tr[data-trace-id='{SEEDED['trace']}']").text)
    no_script_ran(d, "traces")
    shot(d, "traces")

    # Trace → generation, opened by clicking.
    d.find_element(By.CSS_SELECTOR, f"tr[data-trace-id='{SEEDED['trace']}'] a").click()
    wait_css(d, "[data-testid=tree]")
    wait_css(d, "[data-testid=trace-cost]")
    check("chat messages rendered as messages", bool(d.find_elements(By.CSS_SELECTOR, ".msg.role-user")))
    shot(d, "trace")
    d.find_element(By.CSS_SELECTOR, f"a.node[data-obs-id='{SEEDED['generation']}']").click()
    gen_cost = wait_css(d, "[data-testid=gen-cost]")
    check("generation cost = API", abs(float(gen_cost.get_attribute("data-value")) - EXPECT["generationCost"]) < 1e-12,
          gen_cost.get_attribute("data-value"))
    inp = d.find_element(By.CSS_SELECTOR, "[data-testid=gen-input-tokens]").get_attribute("data-value")
    out = d.find_element(By.CSS_SELECTOR, "[data-testid=gen-output-tokens]").get_attribute("data-value")
    check("generation tokens = API", (int(inp), int(out)) == (EXPECT["generationInput"], EXPECT["generationOutput"]),
          (inp, out))
    check("model shown", d.find_element(By.CSS_SELECTOR, "[data-testid=gen-model]").text == "gpt-4o")
    check("time to first token shown", d.find_element(By.CSS_SELECTOR, "[data-testid=gen-ttft]").text != "–")
    shot(d, "generation")

    # The generation links the prompt version it used; its page diffs it with the one before.
    link = d.find_element(By.CSS_SELECTOR, "[data-testid=gen-prompt] a")
    check("prompt link names the version", link.text == SEEDED["prompt"] + " v2", link.text)
    link.click()
    wait_css(d, "[data-testid=prompt-diff]")
    selected = d.find_element(By.CSS_SELECTOR, "[data-testid=prompt-versions] a.selected")
    check("linked version selected", selected.get_attribute("data-version") == "2",
          selected.get_attribute("data-version"))
    added = [e.text for e in d.find_elements(By.CSS_SELECTOR, "[data-testid=prompt-diff] .diff-add .diff-text")]
    removed = [e.text for e in d.find_elements(By.CSS_SELECTOR, "[data-testid=prompt-diff] .diff-del .diff-text")]
    check("diff adds v2's line", added == [SEEDED["promptAdded"]], added)
    check("diff removes v1's line", removed == [SEEDED["promptRemoved"]], removed)
    check("config change diffed", bool(d.find_elements(By.CSS_SELECTOR, "[data-testid=config-diff] .diff-add")))
    labels = d.find_element(By.CSS_SELECTOR, "[data-testid=prompt-labels]").text
    check("v2 carries latest", "latest" in labels, labels)
    shot(d, "prompt")
    d.find_element(By.CSS_SELECTOR, "[data-testid=prompt-versions] a[data-version='1']").click()
    WebDriverWait(d, WAIT).until(lambda d: "production" in d.find_element(
        By.CSS_SELECTOR, "[data-testid=prompt-labels]").text)
    check("v1 has nothing before it", not d.find_elements(By.CSS_SELECTOR, "[data-testid=prompt-diff]"))
    d.find_element(By.CSS_SELECTOR, "a[data-nav=prompts]").click()
    wait_css(d, f"tr[data-prompt='{SEEDED['prompt']}']")
    shot(d, "prompts")

    # Langfuse's htmlPath deep link lands on the same trace.
    d.get(f"{BASE}/project/{PROJECT}/traces/{SEEDED['trace']}")
    wait_css(d, f"a.node[data-obs-id='{SEEDED['generation']}']")

    # A session replays as a conversation: the user's turn, then the answer.
    go(d, route("sessions", "sess-1"))
    turn = wait_css(d, f"[data-testid=turn][data-trace-id='{SEEDED['trace']}']")
    check("session replay shows the question and the answer",
          "Where is my order?" in turn.text and "It ships tomorrow." in turn.text, turn.text)
    shot(d, "session")

    # Live update: a trace ingested now appears without a reload.
    go(d, route("traces", query="range=all"))
    wait_css(d, f"tr[data-trace-id='{SEEDED['trace']}']")
    d.execute_script("window.__marker = 'same page'")
    live_id = "live-" + str(uuid.uuid4())
    time.sleep(0.5)  # let the event stream connect
    ingest_trace(live_id)
    wait_css(d, f"tr[data-trace-id='{live_id}']", timeout=15)
    check("no reload for live update", d.execute_script("return window.__marker") == "same page")

    # Every other view, with the hostile trace in it.
    for name, hash_route, ready in [
        ("xss-trace", route("traces", SEEDED["xssTrace"]), "[data-testid=tree]"),
        ("xss-generation", route("traces", SEEDED["xssTrace"], "observations", SEEDED["xssGeneration"]),
         "[data-testid=gen-cost]"),
        ("sessions", route("sessions", query="range=all"), "table"),
        ("xss-session", route("sessions", SEEDED["xssSession"]), "[data-testid=turn]"),
        ("users", route("users", query="range=all"), "table"),
        ("scores", route("scores", query="range=all"), "table"),
        ("xss-prompt", route("prompts", SEEDED["xssPrompt"]), "[data-testid=prompt-diff]"),
        ("evaluators", route("evaluators"), "tr[data-evaluator-id]"),
        ("settings", route("settings"), "#create-key"),
        ("overview-again", route("overview", query="range=all"), "[data-testid=total-traces]"),
    ]:
        go(d, hash_route)
        wait_css(d, ready)
        time.sleep(0.3)
        no_script_ran(d, name)
        shot(d, name)
    page_text = d.find_element(By.TAG_NAME, "body").text
    check("payload text shown as text", "onerror" in page_text, page_text[:300])
    go(d, route("traces", SEEDED["xssTrace"]))
    wait_css(d, "[data-testid=input] .msg")
    text = d.find_element(By.CSS_SELECTOR, "[data-testid=input]").text
    check("script payload visible literally", "<script>window.__pwned='script'</script>" in text, text[:300])

    # Manual annotation from the trace view, then found on the scores page by its source.
    go(d, route("traces", SEEDED["trace"]))
    wait_css(d, "[data-testid=annotate] form")
    form = d.find_element(By.CSS_SELECTOR, "[data-testid=annotate] form")
    form.find_element(By.CSS_SELECTOR, "select[name=value] option[value='off topic']").click()
    form.find_element(By.NAME, "comment").send_keys("checked by hand")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_css(d, "[data-testid=scores] tr[data-score-name=relevance]")
    row = d.find_element(By.CSS_SELECTOR, "[data-testid=scores] tr[data-score-name=relevance]").text
    check("annotation shown on the trace", "off topic" in row and "ANNOTATION" in row, row)
    shot(d, "annotated")
    go(d, route("scores", query="range=all&source=ANNOTATION"))
    wait_css(d, "tr[data-score-id]")
    rows = [r.text for r in d.find_elements(By.CSS_SELECTOR, "tr[data-score-id]")]
    check("scores page filters by source", len(rows) == 1 and "checked by hand" in rows[0], rows)

    # An evaluator created with the dashboard's form.
    go(d, route("evaluators"))
    wait_css(d, "#new-evaluator").click()
    form = wait_css(d, "#evaluator-form")
    form.find_element(By.NAME, "name").send_keys("helpfulness-judge")
    form.find_element(By.NAME, "scoreName").send_keys("helpful")
    shot(d, "evaluator-form")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(d, WAIT).until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#evaluator-form"))
    rows = [r.text for r in d.find_elements(By.CSS_SELECTOR, "tr[data-evaluator-id]")]
    check("evaluator created from the form", any("helpfulness-judge" in r for r in rows), rows)

    # A large trace stays responsive: capped tree, truncated text, both expandable.
    started = time.monotonic()
    go(d, route("traces", SEEDED["big"]))
    wait_css(d, "[data-testid=tree] a.node")
    elapsed = time.monotonic() - started
    nodes = len(d.find_elements(By.CSS_SELECTOR, "[data-testid=tree] a.node"))
    check("large trace renders fast", elapsed < 10, elapsed)
    check("tree capped at 300 observations + trace", nodes == 301, nodes)
    more = d.find_element(By.XPATH, "//div[@data-testid='tree']/button")
    check("show all offered", f"show all {SEEDED['bigCount']}" in more.text, more.text)
    more.click()
    nodes = len(d.find_elements(By.CSS_SELECTOR, "[data-testid=tree] a.node"))
    check("show all draws every observation", nodes == SEEDED["bigCount"] + 1, nodes)
    # The tree came without the observations' payloads (one of them is 50 kB of input).
    sizes = d.execute_script(
        "return performance.getEntriesByType('resource')"
        ".filter(e => e.name.includes('/api/ui/traces/' + arguments[0])).map(e => e.decodedBodySize)",
        SEEDED["big"])
    full = d.execute_async_script(
        "const done = arguments[2]; fetch('/api/ui/traces/' + arguments[0], {headers: {'X-Sightline-Project': arguments[1]}})"
        ".then(r => r.text()).then(t => done(new TextEncoder().encode(t).length), () => done(-1));",
        SEEDED["big"], PROJECT)
    check("trace view loads no observation payloads (the full trace carries 50 kB more)",
          sizes and max(sizes) < full - 45000, (sizes, full))
    go(d, route("traces", SEEDED["big"], "observations", SEEDED["longObs"]))
    wait_css(d, "[data-testid=input] pre")
    shown = len(d.find_element(By.CSS_SELECTOR, "[data-testid=input] pre").text)
    check("long input truncated", shown < 2100, shown)
    d.find_element(By.CSS_SELECTOR, "[data-testid=input] button").click()
    shown = len(d.find_element(By.CSS_SELECTOR, "[data-testid=input] pre").text)
    check("long input shown in full on request", shown == 50000, shown)
    shot(d, "large-trace")

    # Settings: a new key's secret is shown once.
    go(d, route("settings"))
    wait_css(d, "#create-key").click()
    secret = wait_css(d, "[data-testid=secret-value]").text
    check("new secret shown", secret.startswith("sk-lf-"), secret)

    # Settings: a custom model price added here prices the next generation that names it.
    form = wait_css(d, "#model-form")
    for name, value in [("modelName", "house-llm"), ("matchPattern", "(?i)^house-llm$"),
                        ("inputPrice", "2"), ("outputPrice", "4")]:
        form.find_element(By.CSS_SELECTOR, f"input[name={name}]").send_keys(value)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_css(d, "tr[data-model-name='house-llm']")
    gen_id = "house-" + str(uuid.uuid4())
    ingest([("trace-create", {"id": gen_id + "-t", "name": "house"}),
            ("generation-create", {"id": gen_id, "traceId": gen_id + "-t", "model": "house-llm",
                                   "usageDetails": {"input": 1000, "output": 500}})])
    _, gen = public_api("/api/public/observations/" + gen_id)
    check("custom price applied ($2/$4 per 1M)", abs((gen.get("calculatedTotalCost") or 0) - 0.004) < 1e-12,
          gen.get("calculatedTotalCost"))
    shot(d, "settings-models")

    # A second project: created in settings, opened at once, empty, and the switcher goes back.
    form = wait_css(d, "#project-form")
    form.find_element(By.CSS_SELECTOR, "input[name=projectName]").send_keys("Second team")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(d, WAIT).until(lambda d: f"/p/{PROJECT}/" not in d.execute_script("return location.hash"))
    switcher = wait_css(d, "#project-switcher")
    d.find_element(By.CSS_SELECTOR, "a[data-nav=traces]").click()
    wait_css(d, "main p.muted")
    check("new project starts empty", not d.find_elements(By.CSS_SELECTOR, "tr[data-trace-id]"))
    Select(d.find_element(By.ID, "project-switcher")).select_by_value(PROJECT)
    wait_css(d, f"tr[data-trace-id='{SEEDED['trace']}']")
    check("switcher returns to the first project", f"/p/{PROJECT}/traces" in d.execute_script("return location.hash"))
    shot(d, "project-switcher")

    # Logout ends the session on the server.
    d.find_element(By.ID, "logout").click()
    wait_css(d, "#login-form")
    status = d.execute_async_script(
        "const done = arguments[0]; fetch('/api/ui/me').then(r => done(r.status), () => done(0));")
    check("session gone after logout", status == 401, status)
    d.refresh()
    wait_css(d, "#login-form")

    logs = [e for e in d.get_log("browser") if "Content Security Policy" in e.get("message", "")
            or "Refused to" in e.get("message", "")]
    check("no CSP violations (nothing tried to inject script or style)", not logs, logs[:5])
    no_script_ran(d, "after logout")


def main():
    d = driver()
    try:
        run(d)
    except Exception as e:  # report, with a screenshot of where it stopped
        failures.append(f"exception: {e!r}\n{traceback.format_exc()}")
        try:
            shot(d, "failure")
        except Exception:
            pass
    finally:
        d.quit()
    print(json.dumps({"ok": not failures, "failures": failures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
