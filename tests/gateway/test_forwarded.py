"""Who the client is behind a trusted load balancer: the rightmost X-Forwarded-For hop that is not ours."""

from __future__ import annotations

import pytest

from gateway.proxy.forwarded import Client, client, is_trusted, parse_networks

LB = parse_networks(["10.0.0.0/8", "2001:db8:1::/48"])


@pytest.mark.parametrize("peer, xff, expected_ip", [
    ("10.1.2.3", "203.0.113.7", "203.0.113.7"),
    ("10.1.2.3", "198.51.100.1, 203.0.113.7", "203.0.113.7"),  # whatever the client wrote itself is left of it
    ("10.1.2.3", "203.0.113.7, 10.9.9.9", "203.0.113.7"),  # two of our proxies in a row
    ("10.1.2.3", "10.5.5.5, 10.9.9.9", "10.5.5.5"),  # all ours: the farthest
    ("10.1.2.3", None, "10.1.2.3"),  # a health check from the balancer itself
    ("10.1.2.3", "", "10.1.2.3"),
    ("10.1.2.3", "not-an-ip", "10.1.2.3"),  # garbage: nothing beyond the last hop we trust
    ("10.1.2.3", "203.0.113.7, garbage, 10.9.9.9", "10.9.9.9"),
    ("10.1.2.3", "203.0.113.7:4711", "203.0.113.7"),  # some balancers append the port
    ("10.1.2.3", "[2001:db8:2::5]:443", "2001:db8:2::5"),
    ("2001:db8:1::1", "2001:db8:2::5", "2001:db8:2::5"),
    ("::ffff:10.1.2.3", "203.0.113.7", "203.0.113.7"),  # a dual-stack socket's view of an IPv4 balancer
])
def test_the_client_is_the_rightmost_hop_that_is_not_a_trusted_proxy(peer, xff, expected_ip):
    assert client(peer, False, LB, xff, None) == Client(expected_ip, "http", True)


def test_a_client_that_is_not_a_trusted_proxy_names_nobody():
    # the gateway is the edge for it: its own X-Forwarded-* are ignored (and replaced upstream)
    assert client("203.0.113.7", True, LB, "1.2.3.4", "http") == Client("203.0.113.7", "https", False)
    assert client("10.1.2.3", False, (), "1.2.3.4", "https") == Client("10.1.2.3", "http", False)


def test_the_scheme_is_what_the_nearest_trusted_proxy_says():
    assert client("10.1.2.3", False, LB, "203.0.113.7", "https").scheme == "https"  # TLS ended at the balancer
    assert client("10.1.2.3", False, LB, "203.0.113.7", "https, http").scheme == "http"
    assert client("10.1.2.3", True, LB, "203.0.113.7", "gopher").scheme == "https"  # nonsense: the connection's own
    assert client("10.1.2.3", True, LB, "203.0.113.7", None).scheme == "https"


def test_networks_parse_or_say_which_value_is_wrong():
    assert [str(n) for n in parse_networks(["192.0.2.7", "10.0.0.1/8"])] == ["192.0.2.7/32", "10.0.0.0/8"]
    with pytest.raises(ValueError, match="'10.0.0.0/33' is not an IP network"):
        parse_networks(["10.0.0.0/33"])
    assert is_trusted("10.0.0.1", LB) and not is_trusted("11.0.0.1", LB) and not is_trusted("", LB)
