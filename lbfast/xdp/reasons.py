"""Names of the program's verdict-reason counters (REASON_* in bpf/consts.h, where each
is explained): "drop_malformed", "pass_fragment", ...; and of its flow-state event
counters (EVENT_*): "halfopen_created", "promoted", ..."""
from lbfast.xdp.consts import DEFAULTS

REASONS: dict[int, str] = {
    int(v): k.removeprefix("REASON_").lower()
    for k, v in DEFAULTS.items()
    if k.startswith("REASON_") and k not in ("REASON_NONE", "REASON_COUNT")
}
CODES: dict[str, int] = {name: code for code, name in REASONS.items()}

EVENTS: dict[int, str] = {
    int(v): k.removeprefix("EVENT_").lower()
    for k, v in DEFAULTS.items()
    if k.startswith("EVENT_") and k != "EVENT_COUNT"
}
