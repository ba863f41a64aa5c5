"""The unit board (issue 15 item 4): every watched patient on one page, behind a user-level sign-in.

``routes``  ``/board`` (the page) and ``/board/launch`` (the SMART standalone sign-in with user
            scopes, through the SMART app's own discovery, PKCE, state and sessions)
``page``    the board as HTML with inline SVG trends (no script; refreshes with a meta tag)

The rows come from the watcher's store (``watch_board``, written each cycle by ``crs-cds watch``),
never from grading charts on a refresh.
"""
