"""Certificate checks of API input, off the event loop and bounded in time. cryptography
holds the GIL while it parses and validates (an 8192-bit RSA key takes seconds here), so
a thread would still stall the loop: the checks run in a worker process (this module,
run with -m), which is killed when a check outlasts its bound. Verdicts come back to
control.certificates, so validating the config on the loop afterwards finds them."""
import asyncio
import os
import sys
from datetime import datetime

import orjson

from control import certificates

CHECK_TIMEOUT_S = 5.0
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # where `control` imports from


class CertificateWorker:
    def __init__(self, timeout_s: float = CHECK_TIMEOUT_S):
        self.timeout_s = timeout_s
        self._proc: asyncio.subprocess.Process | None = None
        self._one_at_a_time = asyncio.Lock()   # a check's bound counts from its own start

    async def check(self, pairs: list[tuple[str, str]]) -> None:
        """certificates.check of every (chain, key) pair not known yet; raises
        CertificateError (field chain_pem or key_pem, `index` the bad pair's in `pairs`)
        for the first bad one, or on timeout (index of the first pair checked)."""
        todo = [p for p in dict.fromkeys(pairs) if not certificates.known(*p)]
        if not todo:
            return
        try:
            reply = await self._check(todo)
        except certificates.CertificateError as e:
            e.index = pairs.index(todo[getattr(e, "index", 0)])
            raise
        for (chain, key), info in zip(todo, reply["infos"]):
            certificates.remember(chain, key, _info(info))

    async def _check(self, pairs) -> dict:
        async with self._one_at_a_time:
            try:
                reply = await asyncio.wait_for(self._ask(pairs), self.timeout_s)
            except TimeoutError:
                await self.close()
                raise certificates.CertificateError(
                    "chain_pem", f"checking the certificate took longer than {self.timeout_s:g}s") from None
            except (OSError, ValueError) as e:       # the worker died or answered garbage
                await self.close()
                raise certificates.CertificateError("chain_pem", f"the certificate check failed: {e}") from None
        if "error" in reply:
            e = certificates.CertificateError(reply["error"]["field"], reply["error"]["message"])
            e.index = reply["error"]["index"]
            raise e
        return reply

    async def _ask(self, pairs) -> dict:
        if self._proc is None or self._proc.returncode is not None:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))}
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "control.certificate_worker", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, env=env, limit=1 << 20)
        self._proc.stdin.write(orjson.dumps({"pairs": pairs}) + b"\n")
        await self._proc.stdin.drain()
        line = await self._proc.stdout.readline()
        if not line:
            raise OSError("the certificate worker exited")
        return orjson.loads(line)

    async def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()


def _info(d: dict) -> certificates.CertificateInfo:
    return certificates.CertificateInfo(
        common_name=d["common_name"], subject_alternative_names=tuple(d["subject_alternative_names"]),
        fingerprint=d["fingerprint"], not_valid_before=datetime.fromisoformat(d["not_valid_before"]),
        not_valid_after=datetime.fromisoformat(d["not_valid_after"]), chain_length=d["chain_length"])


def serve(stdin=sys.stdin.buffer, stdout=sys.stdout.buffer) -> None:
    """The worker: one JSON request per line, one answer per line, until stdin closes."""
    for line in stdin:
        infos = []
        try:
            for chain, key in orjson.loads(line)["pairs"]:
                infos.append(certificates.check(chain, key))
            reply = {"infos": infos}
        except certificates.CertificateError as e:
            reply = {"error": {"field": e.field, "message": str(e), "index": len(infos)}}
        stdout.write(orjson.dumps(reply) + b"\n")
        stdout.flush()


if __name__ == "__main__":
    serve()
