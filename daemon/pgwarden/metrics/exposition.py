"""``/metrics`` rendered fast: prometheus_client's own text, most of it formatted once.

With 100 targets the registry holds ~1,500 series, and prometheus_client builds a ``Sample``
and escapes, sorts and formats every label of every series at every scrape: 15-55 ms of one
core, which the scrape waits for behind the backups' threads.  What changes between scrapes
is only the values: :class:`FastExposition` keeps, per format and series, the text before the
value (the library's own encoder renders it once, from a one-sample family), and per scrape
writes ``prefix + floatToGoString(value)``.  The bytes are exactly what the library writes
(a test compares them, for both formats); content negotiation and ``name[]`` filters are the
library's.  A gzip answer (Prometheus asks for one) is compressed at level 1, kept while the
text is the same (:meth:`FastExposition._gzip`).

Only plain :class:`~prometheus_client.Gauge` and :class:`~prometheus_client.Counter` families
whose samples carry no timestamp nor exemplar take the fast path; any other collector (the
monitor's snapshot collector) is rendered by the library, family by family, in registry order.
The fast path reads prometheus_client's metric internals (``_metrics``, ``_child_samples``,
``_value``); on anything unexpected it renders the whole scrape through the library instead.

Between two scrapes most values do not change, so the text of each family is kept with the
label values and values it was written from, and written again only when one of them changed:
comparing ~2,000 values costs ~0.6 ms where formatting them costs ~4 ms, the time a scrape
holds the GIL while backups run.  A collector with a ``cache_token()`` (the monitor's, whose
token is the snapshot it reads, replaced at each sample) is rendered again only when the token
is another object.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import choose_encoder, gzip_accepted, make_wsgi_app
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString
from prometheus_client.values import MutexValue

Encoder = Callable[[Any], bytes]
WsgiStart = Callable[[str, list[tuple[str, str]]], Any]
_EOF = "# EOF\n"
_ZERO = " 0.0\n"


class _Families:
    """A collector-like object yielding given families (what the library's encoders take)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


@dataclass(frozen=True)
class _Written:
    """A family's text, and what it was written from (compared at the next scrape)."""

    source: object
    text: str


class _Unexpected(Exception):
    """A metric the fast path does not handle: the scrape is rendered by the library."""


class FastExposition:
    """Renders one registry in the formats a scraper negotiates (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._library = make_wsgi_app(registry)
        self._headers: dict[tuple[str, int], str] = {}
        self._prefixes: dict[tuple[str, int, tuple[str, ...], str], str] = {}
        self._written: dict[tuple[str, int], _Written] = {}
        self._gzipped: dict[str, tuple[bytes, bytes]] = {}  # format: (text, its gzip)

    # -- rendering -----------------------------------------------------------------------------
    def render(self, encoder: Encoder, key: str) -> bytes:
        """The exposition ``encoder`` (negotiated, named ``key``) would write for the registry."""
        try:
            return self._render_fast(encoder, key)
        except _Unexpected:
            return encoder(self.registry)

    def _text(self, encoder: Encoder, families: Iterable[Metric]) -> str:
        text = encoder(_Families(families)).decode("utf-8")
        return text.removesuffix(_EOF)

    def _render_fast(self, encoder: Encoder, key: str) -> bytes:
        out: list[str] = []
        for collector in list(self.registry._collector_to_names):
            if type(collector) in (Gauge, Counter):
                out.append(self._cached_family(collector, encoder, key))
            else:
                out.append(self._cached_collector(collector, encoder, key))
        if self.registry._target_info:
            raise _Unexpected("target_info")
        if encoder(_Families([])).decode("utf-8").endswith(_EOF):  # OpenMetrics
            out.append(_EOF)
        return "".join(out).encode("utf-8")

    def _cached_collector(self, collector: Any, encoder: Encoder, key: str) -> str:
        """A collector's text: the one written before while its ``cache_token()`` is the same
        object (a collector without one is written at every scrape)."""
        cache_token = getattr(collector, "cache_token", None)
        if cache_token is None:
            return self._text(encoder, collector.collect())
        token = cache_token()
        written = self._written.get((key, id(collector)))
        if written is None or written.source is not token:
            written = _Written(token, self._text(encoder, collector.collect()))
            self._written[(key, id(collector))] = written
        return written.text

    def _cached_family(self, metric: Any, encoder: Encoder, key: str) -> str:
        """A Gauge's or Counter's text: the one written before while its label values and
        values are the same."""
        if metric._is_parent():
            with metric._lock:
                children = list(metric._metrics.items())
        elif metric._labelnames:
            children = []
        else:
            children = [((), metric)]
        for _labels, child in children:
            if "_child_samples" in vars(child):  # Gauge.set_function: no _value to compare
                raise _Unexpected(metric._name)
        if children and type(children[0][1]._value) is MutexValue:
            # the float itself: a read needs no lock (``get`` takes one per value; ~2,000
            # acquisitions were half of a scrape's time in Python)
            source = tuple([(labels, child._value._value) for labels, child in children])
        else:
            source = tuple([(labels, child._value.get()) for labels, child in children])
        written = self._written.get((key, id(metric)))
        if written is None or written.source != source:
            out: list[str] = []
            self._family(metric, children, encoder, key, out)
            written = _Written(source, "".join(out))
            self._written[(key, id(metric))] = written
        return written.text

    def _family(
        self,
        metric: Any,
        children: list[tuple[tuple[str, ...], Any]],
        encoder: Encoder,
        key: str,
        out: list[str],
    ) -> None:
        family = metric._get_metric()
        header = self._headers.get((key, id(metric)))
        if header is None:
            header = self._headers[(key, id(metric))] = self._text(encoder, [family])
        out.append(header)
        for labels, child in children:
            for sample in child._child_samples():
                if sample.labels or sample.timestamp is not None or sample.exemplar is not None:
                    raise _Unexpected(metric._name)
                slot = (key, id(metric), labels, sample.name)
                prefix = self._prefixes.get(slot)
                if prefix is None:
                    prefix = self._prefixes[slot] = self._prefix(
                        metric, labels, sample.name, encoder, header
                    )
                out.append(f"{prefix}{floatToGoString(sample.value)}\n")  # type: ignore[no-untyped-call]

    def _prefix(
        self, metric: Any, labels: tuple[str, ...], suffix: str, encoder: Encoder, header: str
    ) -> str:
        """The text before the value of one series, as the library writes it."""
        family = metric._get_metric()
        names = metric._labelnames
        family.add_sample(metric._name + suffix, dict(zip(names, labels, strict=True)), 0.0)
        text = self._text(encoder, [family])
        if not text.startswith(header) or not text.endswith(_ZERO):
            raise _Unexpected(metric._name)
        line = text[len(header) :]
        if line.count("\n") != 1:
            raise _Unexpected(metric._name)
        return line[: -len(_ZERO) + 1]

    def _gzip(self, key: str, output: bytes) -> bytes:
        """``output`` gzipped: at level 1, not the library's 9 (130 kB of exposition: ~0.3 ms
        instead of ~5 ms of CPU per scrape, for ~9 kB instead of ~7 kB), and not again while
        the text is the same."""
        text, packed = self._gzipped.get(key, (b"", b""))
        if output != text:
            packed = gzip.compress(output, compresslevel=1, mtime=0)
            self._gzipped[key] = (output, packed)
        return packed

    # -- WSGI ----------------------------------------------------------------------------------
    def wsgi(self, environ: dict[str, Any], start_response: WsgiStart) -> Iterable[bytes]:
        """prometheus_client's ``make_wsgi_app`` answer; a plain GET rendered by :meth:`render`
        (other methods and ``name[]`` filters are answered by the library itself)."""
        params = parse_qs(environ.get("QUERY_STRING", ""))
        if environ.get("REQUEST_METHOD") != "GET" or "name[]" in params:
            answer: Iterable[bytes] = self._library(environ, start_response)
            return answer
        encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
        output = self.render(encoder, content_type)
        headers = [("Content-Type", content_type)]
        if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")):  # Prometheus asks for it
            output = self._gzip(content_type, output)
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [output]
