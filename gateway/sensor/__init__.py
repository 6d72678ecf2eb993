"""The browser sensor: sensor.js (+ sensor.min.js, built by build.py), and the gateway's pure building blocks.

protocol.py   wire format and strict decoding into EVENT_DTYPE batches
tokens.py     per-page tokens bound to the session
pings.py      application-level RTT from the sensor's pongs
integrity.py  is the sensor there and honest? -> the `sensor` Signal
inject.py     HTML injection (buffered and streamed), CSP nonce, should_inject
"""
