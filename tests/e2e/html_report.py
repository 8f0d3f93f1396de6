#!/usr/bin/env python3
"""End-to-end test of `hoptrace report --format html`, looked at by a real browser.

1. In a fresh lab, `hoptrace capture --netns c1 --netns c2 --host-netns host` runs while both
   containers ping the server with the same ICMP id and send UDP from the same source port
   (MASQUERADE rewrites the second one's), c1 runs a traceroute (ICMP errors: time exceeded
   from the host and the router, port unreachable from the server), and c1 sends datagrams of two
   sizes to a sink while an iptables rule in the host's FORWARD chain drops one size (losses
   after docker0, counted independently by the rule's own counter).
2. `hoptrace report --format html -o report.html`. The file must be self-contained (no URL at
   all, nothing loaded: no src/href but in-page anchors, no url(), a Content-Security-Policy
   whose script hash is the inline script's own), and show every point, a ladder per flow, the
   masquerade rewrite as conntrack has it, the losses (as many as iptables dropped) and the ICMP
   errors in the path diagram and the ladders.
3. Headless Chromium renders it: the screenshot (1400x1000) is not blank and shows the path
   diagram's colours (decoded here with zlib; standard library only), and the page's DOM after
   loading carries the page's "rendered-ok" mark and no error mark (the page's script marks
   script errors and blocked loads), and Chromium's log has no console message from the page.
4. Hostile point names (markup, quotes, a script tag) imported with `hoptrace import NAME=FILE`:
   the page holds them only escaped, and the browser's DOM has no element they could have made.

HOPTRACE_REPORT_SCREENSHOT=PATH keeps the screenshot of step 3 at PATH (docs/report.png is made
this way; HOPTRACE_REPORT_WINDOW=1400,1700 picks another window size for that copy).

Exit 0 if every check passed, 1 otherwise, 77 if namespaces or Chromium are unavailable (a
failure under HOPTRACE_REQUIRE_NETNS=1). One line per check; the last line is exactly
"N passed, M failed".
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import lablib  # noqa: E402
from live_common import Background, Checks, expect, guarded, netns_left, report_json, run, short, workdir  # noqa: E402

SINK_PORT = 9999
SINK_SPORT = 41000
DROPPED_PAYLOAD = 32   # IP total length 60: dropped by the host's FORWARD rule
PASSED_PAYLOAD = 20    # IP total length 48: forwarded
SINK_DATAGRAMS = 3     # of each size
WINDOW = (1400, 1000)
MAX_FLOWS_DRAWN = 20   # HtmlOptions::max_flows_drawn

# Point names from `hoptrace import`: NAME=FILE (a NAME has no '=' or '/'), or a bare FILE named by its stem (which
# may hold '='). The one path with a directory puts a whole "<script>…</script>" into the page (the points' source
# column, the command line in the header).
HOSTILE_NAMES = [
    "\"><img src=x onerror=alert(1)>",   # bare file
    "<svg onload=alert(1)>",             # bare file
    "<script>alert(1)",                  # NAME=<dir "<script>alert(1)<">/script>.pcap
    "c1' onmouseover='alert(1)'",        # bare file
    "docker0&amp;<i>",                   # NAME=FILE
    "uplink\u2028\u00e9<!--",             # NAME=FILE
]
HOSTILE_TEXT = HOSTILE_NAMES + ["<script>alert(1)</script>"]
LAB_DATA = lablib.REPO_ROOT / "tests" / "data" / "lab"
LAB_FILES = ["c1-eth0.pcap", "c1-veth.pcap", "c2-eth0.pcap", "c2-veth.pcap", "docker0.pcap", "uplink.pcap"]


# --------------------------------------------------------------------------------------------
# Chromium


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium(browser: str, url: str, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """One headless Chromium run on url, isolated (fresh profile, no network use of its own)."""
    profile = tempfile.mkdtemp(prefix="hoptrace-chromium-")
    try:
        argv = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--disable-default-apps", f"--user-data-dir={profile}",
                "--enable-logging=stderr", "--v=0", *extra, url]
        env = {**os.environ, "HOME": profile}
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def console_lines(stderr: str) -> list[str]:
    """Chromium's log lines about the page's console (errors, CSP violations) and uncaught errors."""
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


# --------------------------------------------------------------------------------------------
# PNG, decoded with zlib (8-bit RGB or RGBA, not interlaced: what Chromium writes)


def decode_png(path: Path) -> tuple[int, int, list[bytes], int]:
    """(width, height, rows of raw pixel bytes, bytes per pixel)."""
    data = path.read_bytes()
    expect(data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG")
    pos, idat = 8, b""
    width = height = bpp = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            expect(depth == 8 and colour in (2, 6) and interlace == 0,
                   f"{path}: PNG depth {depth}, colour type {colour}, interlace {interlace} not handled")
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    i = 0
    for _ in range(height):
        kind = raw[i]
        line = bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        if kind == 1:
            for x in range(bpp, stride):
                line[x] = (line[x] + line[x - bpp]) & 0xFF
        elif kind == 2:
            for x in range(stride):
                line[x] = (line[x] + prev[x]) & 0xFF
        elif kind == 3:
            for x in range(stride):
                left = line[x - bpp] if x >= bpp else 0
                line[x] = (line[x] + ((left + prev[x]) >> 1)) & 0xFF
        elif kind == 4:
            for x in range(stride):
                a = line[x - bpp] if x >= bpp else 0
                b = prev[x]
                c = prev[x - bpp] if x >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, rows, bpp


def colour_counts(rows: list[bytes], bpp: int) -> dict[tuple[int, int, int], int]:
    counts: dict[tuple[int, int, int], int] = {}
    for row in rows:
        for x in range(0, len(row), bpp):
            key = (row[x], row[x + 1], row[x + 2])
            counts[key] = counts.get(key, 0) + 1
    return counts


def near(counts: dict[tuple[int, int, int], int], rgb: tuple[int, int, int], tolerance: int = 6) -> int:
    """Pixels within `tolerance` of a colour on every channel."""
    return sum(n for c, n in counts.items() if all(abs(c[k] - rgb[k]) <= tolerance for k in range(3)))


# --------------------------------------------------------------------------------------------
# The page


def script_hash(page: str) -> str:
    m = re.search(r"<script>(.*?)</script>", page, re.S)
    expect(m is not None, "no inline <script> in the page")
    return "sha256-" + base64.b64encode(hashlib.sha256(m.group(1).encode()).digest()).decode()


def tags(page: str) -> list[str]:
    """Every markup tag of the page outside its one script (escaped text holds no raw '<')."""
    page = re.sub(r"<script>.*?</script>", "", page, flags=re.S)
    return re.findall(r"<[^>]*>", page)


def check_self_contained(page: str) -> str:
    expect("://" not in page, f"a URL in the page: …{page[max(0, page.find('://') - 60):page.find('://') + 40]}…")
    expect(page.count("http") == page.count("http-equiv"), "'http' outside the CSP's <meta http-equiv>")
    expect("url(" not in page and "@import" not in page, "CSS that loads something")
    for tag in tags(page):
        expect(" src=" not in tag, f"a src attribute: {tag[:120]}")
        expect(" href=" not in tag or ' href="#' in tag, f"a link out of the page: {tag[:120]}")
    m = re.search(r"script-src '([^']+)'", page)
    expect(m is not None, "no script-src in the Content-Security-Policy")
    expect("default-src 'none'" in page, "the Content-Security-Policy does not forbid loading")
    expect(m.group(1) == script_hash(page), f"CSP script hash {m.group(1)}, the script's is {script_hash(page)}")
    return f"{len(page)} bytes, no URL, nothing loaded, CSP script hash matches"


def dom_of(browser: str, page: Path) -> tuple[str, list[str]]:
    r = chromium(browser, page.as_uri(), "--dump-dom", "--virtual-time-budget=3000")
    expect(r.returncode == 0, f"chromium --dump-dom exited {r.returncode}: {short(r.stderr)}")
    return r.stdout, console_lines(r.stderr)


def check_dom(dom: str, console: list[str]) -> str:
    expect('data-rendered="ok"' in dom and "rendered-ok" in dom, "the page's rendered-ok mark is missing from the DOM "
           "(its script did not run: blocked by the CSP, or failed)")
    mark = 'data-hoptrace-error="1"'
    expect(mark not in dom, "the page marked an error: " + short(re.sub(r"<[^>]+>", " ", dom[dom.find(mark):][:400])))
    expect(not console, "console messages: " + short(" | ".join(console)))
    return "rendered-ok, no error mark, no console message"


# --------------------------------------------------------------------------------------------


def send_sink_datagrams(lab: lablib.Lab) -> None:
    """c1 sends SINK_DATAGRAMS datagrams of each size to the server's sink, alternating."""
    code = (
        "import socket, sys, time\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"s.bind(('', {SINK_SPORT}))\n"
        f"for i in range({SINK_DATAGRAMS}):\n"
        f"    s.sendto(b'p' * {PASSED_PAYLOAD}, (sys.argv[1], {SINK_PORT})); time.sleep(0.05)\n"
        f"    s.sendto(b'd' * {DROPPED_PAYLOAD}, (sys.argv[1], {SINK_PORT})); time.sleep(0.05)\n"
    )
    lab.run("c1", sys.executable, "-c", code, lab.ip["server"])


def drop_rule(length: int) -> list[str]:
    return ["FORWARD", "-p", "udp", "--dport", str(SINK_PORT), "-m", "length", "--length", str(length), "-j", "DROP"]


def dropped_by_rule(lab: lablib.Lab, length: int) -> int:
    """The packet counter of the drop rule (`iptables -L FORWARD -v -x -n`): independent of hoptrace."""
    out = lab.run("host", "iptables", "-L", "FORWARD", "-v", "-x", "-n").stdout
    for line in out.splitlines():
        if "DROP" in line and f"dpt:{SINK_PORT}" in line and f"length {length}" in line:
            return int(line.split()[0])
    raise AssertionError(f"no drop rule in: {out}")


def run_live(checks: Checks, hoptrace: Path, browser: str, lab: lablib.Lab, tmp: Path) -> None:
    db = tmp / "live.db"
    page = tmp / "report.html"
    shot = tmp / "report.png"
    dropped_len = 20 + 8 + DROPPED_PAYLOAD
    lab.flush_conntrack()
    lab.run("host", "iptables", "-I", *drop_rule(dropped_len))
    sink = lab.popen("server", "socat", "-u", f"UDP-RECV:{SINK_PORT},reuseaddr", "/dev/null",
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lab.wait_listening("server", "udp", SINK_PORT)
        capture = Background(hoptrace, "capture", "--db", db, "--netns", lab.ns["c1"], "--netns", lab.ns["c2"],
                             "--host-netns", lab.ns["host"])
        try:
            # The datagrams first: correlate counts a packet as lost only if the next point saw traffic later
            # (beyond --max-hop-gap-ms), i.e. was still capturing.
            send_sink_datagrams(lab)
            pings = lablib.ping_both(lab)
            udp = lablib.udp_both(lab)
            trace = lab.run("c1", "traceroute", "-n", "-q", "1", "-w", "1", "-m", "3", "-U", "-p", "33434",
                            lab.ip["server"], check=False, timeout=30)
            time.sleep(0.3)
            conntrack = lab.conntrack()
        finally:
            capture.interrupt()
            rc, _out, err = capture.wait(120)
        dropped = dropped_by_rule(lab, dropped_len)
    finally:
        lablib._terminate(sink)
    if checks("capture around ping, UDP, traceroute and dropped datagrams exits 0",
              lambda: expect(rc == 0, f"exit {rc}: {short(err)}") or
              f"pings {[p.received for p in pings.values()]}, udp echoed "
              f"{[sum(u.echoed) for u in udp.values()]}, traceroute exit {trace.returncode}, iptables dropped {dropped}"
              ) is None:
        return
    report = report_json(hoptrace, db)
    r = run(hoptrace, "report", "--db", db, "--format", "html", "-o", page)
    if checks("report --format html -o FILE exits 0 and writes the page",
              lambda: expect(r.returncode == 0 and page.is_file() and page.stat().st_size > 0,
                             f"exit {r.returncode}: {short(r.stderr)}") or f"{page.stat().st_size} bytes") is None:
        return
    text = page.read_text()
    checks("the page is self-contained", lambda: check_self_contained(text))

    def everything_shown() -> str:
        for p in report["points"]:
            expect(html.escape(p["name"], quote=True).replace("&#x27;", "&#39;") in text, f"point {p['name']} missing")
        flows = report["flows"]
        ladders = text.count('<svg class="ladder"')
        expect(ladders == min(len(flows), MAX_FLOWS_DRAWN), f"{ladders} ladders for {len(flows)} flows")
        expect(text.count('<svg class="pathdiagram"') == 1, "no path diagram")
        expect(text.count('<svg class="hist"') >= 1, "no hop histogram")
        nat_src = {e.translated().src for e in conntrack if e.original.src in (lab.ip["c1"], lab.ip["c2"])}
        expect(nat_src == {lab.ip["host"]}, f"conntrack's translations: {nat_src}")
        expect(f"<mark>{lab.ip['host']}</mark>" in text, f"the masquerade address {lab.ip['host']} is not marked")
        # Both containers' ICMP flows, c2's id rewritten as conntrack says, and conntrack agreeing.
        for c in ("c1", "c2"):
            e = next((e for e in conntrack if e.proto == "icmp" and e.original.src == lab.ip[c]), None)
            expect(e is not None, f"no conntrack entry for {c}'s ping")
            if e.translated().id != e.original.id:
                expect(f"<mark>{e.translated().id}</mark>" in text, f"{c}'s rewritten id {e.translated().id} not marked")
        expect('<span class="badge b-ok">agrees</span>' in text, "no flow where conntrack agrees")
        return (f"{len(report['points'])} points, {ladders} ladders, masquerade to {lab.ip['host']} marked, "
                "conntrack agrees")
    checks("the page shows every point, a ladder per flow and the NAT as conntrack has it", everything_shown)

    def losses_and_errors() -> str:
        sink_flow = next((f for f in report["flows"] if f["proto"] == "udp" and f["original"].get("dport") == SINK_PORT),
                         None)
        expect(sink_flow is not None, "no flow to the sink")
        lost = sum(l["count"] for l in sink_flow["lost"] if l["direction"] == "forward")
        expect(lost == dropped == SINK_DATAGRAMS, f"report: {lost} lost, iptables dropped {dropped}")
        expect('<g class="tag loss">' in text and f"✕ {lost} forward lost" in text, "no loss tag in the path diagram")
        expect('<g class="lost">' in text, "no lost journey marked in a ladder")
        errors = report["icmp_errors"]
        expect(len(errors) >= 2, f"{len(errors)} ICMP errors from the traceroute (want time exceeded and unreachable)")
        expect('<g class="tag err">' in text, "no ICMP error tag in the path diagram")
        expect('<g class="j err">' in text, "no ICMP error journey in a ladder")
        traces = report.get("traceroutes", [])
        expect(len(traces) == 1 and traces[0]["dst"] == lab.ip["server"], f"traceroutes in the report: {traces}")
        section = text[text.find('<section id="traceroutes">'):]
        section = section[:section.find("</section>")]
        expect(section and section.count("<tr><td class=\"n\">") == len(traces[0]["hops"]) >= 2,
               f"traceroute table rows: {section[:400]}")
        expect("time exceeded" in section, "no time exceeded in the traceroute table")
        return (f"{lost} lost after the drop rule (iptables counted {dropped}), {len(errors)} ICMP errors, all flagged; "
                f"traceroute table with {len(traces[0]['hops'])} rows")
    checks("losses and ICMP errors are flagged on the diagrams", losses_and_errors)

    r = chromium(browser, page.as_uri(), f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                 "--hide-scrollbars")

    def screenshot() -> str:
        expect(r.returncode == 0 and shot.is_file(), f"chromium --screenshot exited {r.returncode}: {short(r.stderr)}")
        width, height, rows, bpp = decode_png(shot)
        expect((width, height) == WINDOW, f"screenshot {width}x{height}")
        counts = colour_counts(rows, bpp)
        total = width * height
        light = near(counts, (255, 255, 255), 8) + near(counts, (241, 245, 249), 4)  # white, the page background
        expect(len(counts) > 200, f"only {len(counts)} colours: blank?")
        expect(total - light > total // 10, f"{total - light} of {total} pixels are not background: blank?")
        nat = near(counts, (254, 243, 199))       # the NAT tags in the path diagram
        forward = near(counts, (37, 99, 235), 30)  # the forward colour (legend)
        expect(nat > 500, f"{nat} pixels of the NAT tags' colour: no path diagram?")
        expect(forward > 50, f"{forward} pixels of the forward colour")
        console = console_lines(r.stderr)
        expect(not console, "console messages while rendering: " + short(" | ".join(console)))
        return f"{width}x{height}, {len(counts)} colours, {100 * (total - light) // total}% not background, NAT tags drawn"
    checks("headless Chromium's screenshot shows the diagram", screenshot)

    keep = os.environ.get("HOPTRACE_REPORT_SCREENSHOT")
    if keep:
        size = os.environ.get("HOPTRACE_REPORT_WINDOW", f"{WINDOW[0]},{WINDOW[1]}")
        chromium(browser, page.as_uri(), f"--screenshot={keep}", f"--window-size={size}", "--hide-scrollbars")
        print(f"screenshot kept in {keep}", flush=True)

    checks("the page renders without errors (DOM after load, console)", lambda: check_dom(*dom_of(browser, page)))


def run_hostile(checks: Checks, hoptrace: Path, browser: str, tmp: Path) -> None:
    db = tmp / "hostile.db"
    page = tmp / "hostile.html"
    files = tmp / "hostile"
    (files / "<script>alert(1)<").mkdir(parents=True)
    specs = []
    for i, (name, f) in enumerate(zip(HOSTILE_NAMES, LAB_FILES)):
        if name.startswith("<script>"):
            path = files / "<script>alert(1)<" / "script>.pcap"
            specs.append(f"{name}={path}")
        elif i in (0, 1, 3):
            path = files / f"{name}.pcap"
            specs.append(str(path))
        else:
            path = files / f
            specs.append(f"{name}={path}")
        shutil.copyfile(LAB_DATA / f, path)
    r = run(hoptrace, "import", "--db", db, *specs)
    if checks("import with hostile point names exits 0",
              lambda: expect(r.returncode == 0, f"exit {r.returncode}: {short(r.stderr)}") or "exit 0") is None:
        return
    r = run(hoptrace, "report", "--db", db, "--format", "html", "-o", page)
    if checks("report --format html of it exits 0",
              lambda: expect(r.returncode == 0 and page.is_file(), f"exit {r.returncode}: {short(r.stderr)}") or
              "exit 0") is None:
        return
    text = page.read_text()

    def only_escaped() -> str:
        for name in HOSTILE_TEXT:
            expect(name not in text, f"{name!r} appears unescaped")
            escaped = html.escape(name, quote=True).replace("&#x27;", "&#39;")
            expect(escaped in text, f"{name!r} does not appear escaped ({escaped!r})")
        names = sorted(p["name"] for p in report_json(hoptrace, db)["points"])
        expect(names == sorted(HOSTILE_NAMES), f"points {names}")
        expect(text.count("<script") == 1, f"{text.count('<script')} <script> tags")
        for bad in ("<img", "<svg onload", "<i>", "<!--"):
            expect(bad not in text, f"{bad} in the page")
        for tag in tags(text):
            expect("onerror" not in tag and "onmouseover" not in tag and "alert" not in tag, f"hostile tag {tag[:120]}")
        return f"{len(HOSTILE_TEXT)} hostile strings, each only as escaped text"
    checks("hostile point names end up only as escaped text", only_escaped)
    checks("the hostile page is self-contained", lambda: check_self_contained(text))

    def dom() -> str:
        d, console = dom_of(browser, page)
        detail = check_dom(d, console)
        expect(d.count("<script") == 1, f"{d.count('<script')} script elements in the DOM")
        expect("<img" not in d and "<svg onload" not in d and "<i>" not in d, "an element made from a point name")
        return detail + ", no element made from a name"
    checks("in the browser, the hostile names made no element", dom)


def main() -> int:
    lablib.require_root_or_skip()
    hoptrace = lablib.hoptrace_binary()
    browser = chromium_binary()
    if browser is None:
        why = "no chromium (examples/install-deps.sh installs it)"
        if os.environ.get("HOPTRACE_REQUIRE_NETNS") == "1":
            print(f"FAIL: HOPTRACE_REQUIRE_NETNS=1 but {why}", flush=True)
            return 1
        print(f"SKIP: {why}", flush=True)
        return lablib.SKIP_RETURN_CODE
    lablib.arm_watchdog(400)
    checks = Checks()
    prefixes = []
    with workdir("hoptrace-html-") as tmp:
        guarded(checks, "hostile point names", run_hostile, checks, hoptrace, browser, tmp)
        with lablib.Lab() as lab:
            prefixes.append(lab.prefix)
            guarded(checks, "live capture rendered as HTML", run_live, checks, hoptrace, browser, lab, tmp)
    checks("no namespace left behind", lambda: expect(not netns_left(prefixes), f"left: {netns_left(prefixes)}")
           or f"no {prefixes[0]}-* namespace")
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
