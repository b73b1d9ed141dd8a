"""
Tests for L{jspsych_tobii.core.access}: origin patterns, the token, and
what counts as reachable from other machines.
"""

from twisted.trial import unittest

from jspsych_tobii.core.access import (
    OriginPolicy,
    check_token,
    describe_endpoint,
    is_exposed,
    normalize_origin,
    token_matches,
)


class OriginPolicyTests(unittest.SynchronousTestCase):
    def test_local_admits_this_machine_and_disk(self):
        policy = OriginPolicy(["local"])
        for origin in (
            "http://localhost:8000",
            "http://localhost",
            "https://localhost:8443",
            "http://127.0.0.1:5500",
            "https://127.0.0.1",
            "http://[::1]:3000",
            "HTTP://LocalHost:8000",
            "null",
        ):
            self.assertTrue(policy.allows(origin), origin)
        for origin in (
            "http://evil.example",
            "http://localhost.evil.example:8000",
            "http://127.0.0.1.nip.io",
            "http://127.0.0.2:8000",
            "http://192.168.1.20:8000",
            "file://",
            "not an origin",
        ):
            self.assertFalse(policy.allows(origin), origin)

    def test_no_origin_header_is_a_program_and_admitted(self):
        self.assertTrue(OriginPolicy(["http://lab.example.org"]).allows(None))
        self.assertTrue(OriginPolicy(["http://lab.example.org"]).allows(""))

    def test_every_page(self):
        policy = OriginPolicy(["*"])
        self.assertTrue(policy.admits_every_page)
        self.assertTrue(policy.allows("http://anywhere.example:81"))
        self.assertTrue(policy.allows("null"))
        self.assertFalse(OriginPolicy(["local"]).admits_every_page)

    def test_patterns(self):
        policy = OriginPolicy(["https://lab.example.org", "http://*.lab.example.org:*"])
        self.assertTrue(policy.allows("https://lab.example.org"))
        self.assertTrue(policy.allows("https://lab.example.org:443"))
        self.assertFalse(policy.allows("https://lab.example.org:8443"), "a pattern without port")
        self.assertFalse(policy.allows("http://lab.example.org"))
        self.assertTrue(policy.allows("http://pc1.lab.example.org:8000"))
        self.assertFalse(policy.allows("http://evil.example:80.lab.example.org:80"))
        self.assertFalse(policy.allows("null"), "null only when listed")
        self.assertTrue(OriginPolicy(["http://localhost:*", "null"]).allows("null"))

    def test_bad_patterns(self):
        for bad in ([], [" "], ["localhost"], ["http://localhost:port"]):
            with self.assertRaises(ValueError):
                OriginPolicy(bad)

    def test_admitting_names_the_option_value(self):
        self.assertEqual(
            OriginPolicy(["local"]).admitting("https://lab.example.org"),
            "local,https://lab.example.org",
        )
        self.assertEqual(
            OriginPolicy(["local"]).admitting("http://10.0.0.5:8000"),
            "local,http://10.0.0.5:8000",
        )

    def test_normalize(self):
        self.assertEqual(normalize_origin("HTTP://Example.ORG"), "http://example.org:80")
        self.assertEqual(normalize_origin("https://[::1]"), "https://[::1]:443")
        self.assertEqual(normalize_origin("null"), "null")
        for bad in ("example.org", "http://", "http://x/path"):
            with self.assertRaises(ValueError):
                normalize_origin(bad)


class TokenTests(unittest.SynchronousTestCase):
    def test_matches(self):
        self.assertTrue(token_matches("s3cret-token_~.x", "s3cret-token_~.x"))
        self.assertFalse(token_matches("s3cret-token_~.y", "s3cret-token_~.x"))
        self.assertFalse(token_matches("", "s3cret"))
        self.assertFalse(token_matches(None, "s3cret"))
        self.assertFalse(token_matches("s3cret" * 1000, "s3cret"))

    def test_check(self):
        self.assertEqual(check_token("--token", "aZ09-._~"), "aZ09-._~")
        for bad in ("", "has space", "a&b", "a+b", "x" * 1025, "é"):
            with self.assertRaises(ValueError) as caught:
                check_token("--token", bad)
            self.assertIn("--token", str(caught.exception))
            if bad:
                self.assertNotIn(bad, str(caught.exception), "the token is never repeated")


class EndpointTests(unittest.SynchronousTestCase):
    def test_describe_hides_paths(self):
        self.assertEqual(
            describe_endpoint(
                "ssl:8443:privateKey=/etc/tobii/key.pem:certKey=/etc/tobii/cert.pem"
                ":interface=0.0.0.0"
            ),
            "ssl:8443:interface=0.0.0.0",
        )
        self.assertEqual(
            describe_endpoint("systemd:domain=INET:name=web"), "systemd:domain=INET:name=web"
        )
        self.assertEqual(describe_endpoint("tcp:80:interface=\\:\\:1"), "tcp:80:interface=\\:\\:1")

    def test_exposed(self):
        self.assertFalse(is_exposed("8080", "localhost"))
        self.assertFalse(is_exposed("8080", "127.0.0.1"))
        self.assertFalse(is_exposed("8080", "::1"))
        self.assertTrue(is_exposed("8080", "0.0.0.0"))
        self.assertTrue(is_exposed("8080", "192.168.1.20"))
        self.assertTrue(is_exposed("8080", "lab-pc.example.org"))
        self.assertTrue(is_exposed("tcp:8080", "localhost"), "tcp without interface: all")
        self.assertTrue(is_exposed("tcp:8080:interface=0.0.0.0", "localhost"))
        self.assertFalse(is_exposed("tcp:8080:interface=127.0.0.1", "0.0.0.0"))
        self.assertFalse(is_exposed("tcp6:8080:interface=\\:\\:1", "localhost"))
        self.assertFalse(is_exposed("ssl:8443:privateKey=k:interface=localhost", "x"))
        self.assertTrue(is_exposed("ssl:8443:privateKey=k", "localhost"))
        self.assertFalse(is_exposed("unix:/run/tobii.sock", "0.0.0.0"))
        self.assertTrue(is_exposed("systemd:domain=INET:name=web", "localhost"))
