"""The till's side: checkouts a till arms (checkouts.py), the tills and their tokens and the
scanner's TLS certificate (tills.py), and the HTTPS API they talk to (api.py). Never a pixel."""
