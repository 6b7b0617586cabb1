# Placeholder while llc/api.py is split into settings / core / health / api.
from tmsjax.llc import api as _api

globals().update({k: v for k, v in vars(_api).items() if not k.startswith("__")})
from tmsjax.llc.api import LLCResult, estimate_llc, llc_along_training, llc_grid, verdict  # noqa: E402,F401
