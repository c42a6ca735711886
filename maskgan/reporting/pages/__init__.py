"""Static results pages: a run's report.html (maskgan.reporting.pages.run_page) and, built from the same pieces, a sweep's
index.html (tune/index_page.py).

Static files only: relative links, images written next to the page through data_loader.storage (so a local folder
and an S3 prefix work alike), a Content-Security-Policy that allows nothing but the page's own folder, inline
CSS and a few lines of inline JavaScript; no server, no CDN, no fonts or scripts from anywhere, no network at view
time. Plots are matplotlib PNGs (maskgan.reporting.pages.plots). maskgan.reporting.pages.browser drives a real headless Chromium for
the tests and for `python -m maskgan.reporting.pages.screenshot`.
"""
