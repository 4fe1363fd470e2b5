"""The headless Chromium that drives the board in its browser tests, its page benchmarks and the docs' pictures.

Debian's package (``apt-get install chromium``; ``make test`` installs it when root), never Playwright's own browser
download, with nothing that reaches the network and no first-run work.
"""

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
