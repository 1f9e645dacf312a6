"""`lbfast top`: the status page's view in a terminal, redrawn in place (plain ANSI, no
curses) from the daemon's control socket; `q` or Ctrl-C quits."""
import os
import select
import shutil
import sys
import termios
import time
import tty
from collections.abc import Callable

# ANSI background per display state (the page's colours, as near as 8 colours get)
STATE_COLOUR = {"up": "42;30", "nocheck": "32", "going-down": "43;30", "down": "41;97", "going-up": "43;30",
                "drain": "44;97", "backup": "46;30", "maint": "45;97", "init": "2"}
HEAD = "1"


def _bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}TB"


def _ago(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{s // 60:.0f}m{s % 60:02.0f}s"
    return f"{s // 3600:.0f}h{s % 3600 // 60:02.0f}m"


def _rate(r: float | None) -> str:
    return "-" if r is None else f"{r:.1f}"


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()


def _table(header: list[str], rows: list[tuple[list[str], str | None]], indent: str) -> list[tuple[str, str | None]]:
    """Lines of a table: (text, ANSI colour of the line or None)."""
    widths = [max(len(h), *(len(r[i]) for r, _ in rows)) if rows else len(h) for i, h in enumerate(header)]
    return [(indent + _row(header, widths), HEAD)] + [(indent + _row(r, widths), colour) for r, colour in rows]


def frame_lines(doc: dict) -> list[tuple[str, str | None]]:
    """The whole view as lines, each with the colour it is drawn in."""
    d = doc["daemon"]
    lines = [(f"lbfast top - pid {d['pid']}, up {_ago(d['uptime_s'])}, data plane {d['dataplane']}, "
              f"HA {d['ha']['mode']}/{d['ha']['role']}, reloads {d['reloads']} ok/{d['reload_failures']} rejected, "
              f"{time.strftime('%H:%M:%S', time.localtime(doc['generated_at']))} ({d['build_ms']} ms)", HEAD)]
    if d["last_error"]:
        lines.append((f"last reload error: {d['last_error']}", STATE_COLOUR["down"]))
    for lb in doc["lbs"]:
        lines.append(("", None))
        lines.append((f"LB {lb['name']}  VIP {lb['vip']}  HA {lb['ha_role']}  plane {','.join(lb['dataplanes']) or '-'}",
                      "1;4"))
        frontends = []
        for f in lb["frontends"]:
            http = f["protocol"] in ("http", "https")
            r = f["responses"] or {}
            frontends.append(([f["name"], f["listen"], f["protocol"], f["dataplane"], str(f["active"]), str(f["peak"]),
                               _rate(f["conn_rate"]), _rate(f["req_rate"]) if http else "-", str(f["total"]),
                               str(f["requests"]) if http else "-", _bytes(f["bytes_in"]), _bytes(f["bytes_out"]),
                               "/".join(str(r.get(c, 0)) for c in ("2xx", "3xx", "4xx", "5xx")) if http else "-",
                               str(f["errors"] + f["bad_requests"]), str(f["refused"])], None))
        lines += _table(["FRONTEND", "LISTEN", "PROTO", "PLANE", "CUR", "MAX", "CONN/S", "REQ/S", "CONNS", "REQS",
                         "IN", "OUT", "2xx/3xx/4xx/5xx", "ERR", "REFUSED"], frontends, "  ")
        for b in lb["backends"]:
            lines.append((f"  BACKEND {b['name']} ({b['protocol']}, {b['algorithm']}, {b['check']} check, "
                          f"{b['serving']}/{len(b['servers'])} serving, retries {b['retries']})",
                          STATE_COLOUR["up" if b["state"] == "up" else "down"]))
            servers = []
            for s in b["servers"]:
                if s["check"] == "none":
                    check = "no check"
                elif s["last_ok"] is None:
                    check = "pending"
                else:
                    check = ("ok: " if s["last_ok"] else "failed: ") + s["last_reason"]
                servers.append(([s["key"] + (f" ({s['label']})" if s["label"] else ""), s["state_label"], check,
                                 _ago(s["changed_ago_s"]), str(s["weight"]), s["mode"], str(s["active"]),
                                 str(s["total"]), _bytes(s["bytes_in"]), _bytes(s["bytes_out"]), str(s["failed"])],
                                STATE_COLOUR.get(s["state"])))
            lines += _table(["SERVER", "STATE", "LAST CHECK", "SINCE", "WEIGHT", "MODE", "CUR", "CONNS", "IN", "OUT",
                             "FAIL"], servers, "    ")
    return lines


def render(doc: dict, width: int, colour: bool) -> str:
    out = []
    for text, code in frame_lines(doc):
        text = text[:width]
        out.append(f"\x1b[{code}m{text.ljust(width)}\x1b[0m" if colour and code else text)
    return "\n".join(out)


def run(fetch: Callable[[], dict], interval: float, once: bool = False) -> None:
    """Draw `fetch()`'s document every `interval` seconds until q or Ctrl-C (once: one frame)."""
    tty_out = sys.stdout.isatty()
    if once or not tty_out or not sys.stdin.isatty():
        sys.stdout.write(render(fetch(), shutil.get_terminal_size().columns if tty_out else 1000, tty_out) + "\n")
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    sys.stdout.write("\x1b[?1049h\x1b[?25l")        # alternate screen, no cursor
    try:
        tty.setcbreak(fd)
        while True:
            size = shutil.get_terminal_size()
            lines = render(fetch(), size.columns, True).split("\n")[:size.lines - 1]
            footer = f"refresh every {interval:g}s - q quits"
            sys.stdout.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n\x1b[2m" + footer[:size.columns] + "\x1b[0m")
            sys.stdout.flush()
            ready, _, _ = select.select([fd], [], [], interval)
            if ready and os.read(fd, 32).strip().lower().startswith(b"q"):
                return
    except KeyboardInterrupt:
        return
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        sys.stdout.write("\x1b[?25h\x1b[?1049l")
        sys.stdout.flush()
