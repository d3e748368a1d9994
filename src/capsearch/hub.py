"""The Hugging Face Hub's reachability: one quick probe before the first request, offline mode where it fails."""

from __future__ import annotations

import socket
from urllib.parse import urlparse

HUB_PROBE_SECONDS = 3.0
_reachable: dict[str, bool] = {}  # Hub endpoint -> whether it took a TCP connection
_made_offline = False  # whether offline mode is this module's doing (not the user's HF_HUB_OFFLINE)


def offline_when_unreachable() -> None:
    """Before a Hub request: where the Hub's endpoint does not take a TCP connection within
    :data:`HUB_PROBE_SECONDS` (probed once per endpoint and process), switch huggingface_hub, and transformers with
    it, to offline mode in this process, as HF_HUB_OFFLINE=1 would. A cached model then loads from the cache, and one
    that is not cached fails at once in one line, instead of after half a minute of retries. A user's own
    HF_HUB_OFFLINE is left as it is."""
    global _made_offline
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE and not _made_offline:
        return
    endpoint = constants.ENDPOINT
    if endpoint not in _reachable:
        url = urlparse(endpoint)
        try:
            port = url.port or (443 if url.scheme == "https" else 80)
            socket.create_connection((url.hostname, port), timeout=HUB_PROBE_SECONDS).close()
            _reachable[endpoint] = True
        except OSError:
            _reachable[endpoint] = False
    _made_offline = constants.HF_HUB_OFFLINE = not _reachable[endpoint]
