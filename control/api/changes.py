"""Every API change goes the same way: under the daemon's lock (one writer: SIGHUP, API and
CLI queue there), edit a copy of the config, validate the whole, apply it to the data
planes and write the file. A refused change leaves the running config and the file as
they were."""
from collections.abc import Callable

from pydantic import BaseModel, ValidationError

from control.api.errors import ApiError
from control.config import ConfigError, error_message, field_path
from control.edit import Change, NotFound
from control.model import Config


async def commit(daemon, edit: Callable[[Change], object], render: Callable[[Config, object], object]):
    """`edit(change)` edits; `render(new_config, what edit returned)` builds the answer
    from the committed config (ids and VIPs assigned). ConfigError and NotFound come out
    as they are, for the dialect to name the field in its own words."""
    async with daemon.lock:
        change = Change(daemon.config)
        result = edit(change)
        new = change.done()
        try:
            await daemon.commit(new)
        except OSError as e:
            raise ApiError.bad_request(None, f"the data plane refused the change: {e.strerror or e}") from None
        api = getattr(daemon, "api", None)
        if api is not None:
            api.changes += 1
        return render(new, result)


def validated(cls: type[BaseModel], data: dict, at: str) -> BaseModel:
    """A model object built by a dialect; errors name the field as the config file does
    (`at` is the object's path, e.g. "ips[3].")."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError([(f"{at}{field_path(err['loc'])}", error_message(err)) for err in e.errors()]) from None


__all__ = ["commit", "validated", "Change", "ConfigError", "NotFound"]
