"""SMART App Launch 2.x for the CRS course page (issue 8): EHR and standalone launch, server-side.

Why server-side (a confidential-style backend holding the tokens): the access token reads a
patient's chart, so it never reaches the browser. The browser holds one random, HttpOnly session
id; everything else stays on the server.

``sessions``  the session store and PKCE pair
``context``   ``SmartApp``: the registered client, issuer checks, discovery, token exchange
``routes``    ``/smart/launch``, ``/smart/callback``, ``/smart/app``, ``/smart/course``
``page``      the course page as HTML with inline SVG (no scripts)
"""

from __future__ import annotations

from cds_hooks.settings import Settings


def smart_enabled(settings: Settings) -> bool:
    """The app is on when a client id and a redirect URL are both registered."""
    return bool(settings.smart_client_id and settings.smart_redirect_url)
