"""The endpoint table, `STRIPE_WEBHOOKS["ENDPOINTS"]`: one entry per receiving URL.

    "ENDPOINTS": {
        "default": {"SECRETS": ["whsec_…"]},
        "thin": {"SECRETS": ["whsec_…"], "STYLE": "thin", "API_KEY": "sk_…"},
    }

Keys an endpoint takes beyond its secrets fall back to the top-level setting
of the same name (`API_KEY`, `API_BASE`, `ORDERING`, `SKIP_SUPERSEDED`,
`RECONCILE_EVERY`); `Endpoint` holds the values in effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .validate import api_base, choice, fail, flag, number, optional_number, optional_text

DEFAULT_TOLERANCE = 300

SNAPSHOT, THIN = "snapshot", "thin"
STYLES = (SNAPSHOT, THIN)
ORDERINGS = (None, "object")

# Keys that default to the top-level setting of the same name.
INHERITED_KEYS = ("API_KEY", "API_BASE", "ORDERING", "SKIP_SUPERSEDED", "RECONCILE_EVERY")
ENDPOINT_KEYS = {"SECRETS", "TOLERANCE", "STYLE", *INHERITED_KEYS}
# Reconciling more often than this would only page the same events again.
MIN_RECONCILE_EVERY = 60


@dataclass(frozen=True)
class Endpoint:
    """One receiving URL and how its events are verified, fetched and processed."""

    name: str
    secrets: tuple[str, ...]
    tolerance: int
    style: str = SNAPSHOT
    # For the library's calls to Stripe's API (thin-event fetches, backfill,
    # reconciliation); None when no key is configured anywhere.
    api_key: str | None = None
    # None: Stripe's own (https://api.stripe.com).
    api_base: str | None = None
    ordering: str | None = None
    skip_superseded: bool = False
    # Seconds between reconciliation runs; None: not reconciled.
    reconcile_every: float | None = None

    @property
    def is_thin(self) -> bool:
        return self.style == THIN

    def __repr__(self) -> str:  # never print secrets or keys, even in debug pages
        return (
            f"Endpoint(name={self.name!r}, secrets=<{len(self.secrets)} hidden>, "
            f"tolerance={self.tolerance}, style={self.style!r}, "
            f"api_key=<{'hidden' if self.api_key else 'not set'}>, api_base={self.api_base!r}, "
            f"ordering={self.ordering!r}, skip_superseded={self.skip_superseded}, "
            f"reconcile_every={self.reconcile_every!r})"
        )


def inherited_value(key: str, value: Any, where: str) -> Any:
    """Validate a value of one of INHERITED_KEYS, at the top level or in an endpoint."""
    if key == "API_KEY":
        return optional_text(value, where)
    if key == "API_BASE":
        return api_base(value, where)
    if key == "ORDERING":
        return choice(value, where, ORDERINGS)
    if key == "SKIP_SUPERSEDED":
        return flag(value, where)
    return optional_number(value, where, MIN_RECONCILE_EVERY)


def parse_endpoints(raw: Any, inherited: dict[str, Any]) -> dict[str, Endpoint]:
    """The validated endpoint table; `inherited` holds the top-level values of INHERITED_KEYS."""
    if not isinstance(raw, dict) or not raw:
        raise fail('ENDPOINTS must be a dict such as {"default": {"SECRETS": ["whsec_..."]}}.')
    endpoints = {}
    for name, conf in raw.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise fail(f"endpoint names must be non-empty strings without '/', got {name!r}.")
        where = f'ENDPOINTS["{name}"]'
        if not isinstance(conf, dict):
            raise fail(f'{where} must be a dict with "SECRETS" and "TOLERANCE".')
        unknown = set(conf) - ENDPOINT_KEYS
        if unknown:
            known = sorted(ENDPOINT_KEYS)
            raise fail(f"{where} has unknown keys {sorted(unknown)}; known keys are {known}.")
        secrets = conf.get("SECRETS", [])
        if isinstance(secrets, str):
            secrets = secrets.split(",")
        if not isinstance(secrets, list | tuple) or not all(isinstance(s, str) for s in secrets):
            raise fail(f'{where}["SECRETS"] must be a list of strings.')
        tolerance = number(conf.get("TOLERANCE", DEFAULT_TOLERANCE), f'{where}["TOLERANCE"]', 1)
        values = {
            key.lower(): (
                inherited_value(key, conf[key], f'{where}["{key}"]')
                if key in conf
                else inherited[key]
            )
            for key in INHERITED_KEYS
        }
        endpoints[name] = Endpoint(
            name=name,
            secrets=tuple(s.strip() for s in secrets if s.strip()),
            tolerance=int(tolerance),
            style=choice(conf.get("STYLE", SNAPSHOT), f'{where}["STYLE"]', STYLES),
            **values,
        )
    return endpoints
