"""libjpeg's bare messages off the server's stderr: the rejected request is logged instead.

TensorFlow decodes JPEGs with libjpeg(-turbo), whose error manager prints each fatal
error and the first warning of a corrupt file straight to file descriptor 2 with
``fprintf`` ("Improper call to JPEG library in state 201"): no time, no request, and
from C, so neither Python's logging nor TF_CPP_MIN_LOG_LEVEL reaches it. An image is
decoded twice for a rejected request (the model's signature, then
``serving.dataplane``'s row check), so each corrupt upload left two or more such lines.
The request itself is already answered INVALID_ARGUMENT naming the row, and
``serving.dataplane`` logs one timestamped line per rejected request, so these lines
carry nothing more: ``cgd serve`` runs with fd 2 piped through a small filter process
that drops exactly the lines matching ``LIBJPEG_MESSAGE`` (jerror.h's decoding errors
and warnings) and passes everything else on as it comes. A separate process, not a
thread, so that what the server writes just before it dies (an abort's message) still
reaches the terminal. The filter process is core.stderr_filter's, which ``cli.noise`` uses for the
TensorFlow import too. Only ``cli.serving_commands`` and the demo import this module.
"""

from __future__ import annotations

import contextlib
import re

from core.stderr_filter import stderr_without

# libjpeg-turbo's jerror.h: the messages a decompressor emits (JERR_* while reading, JWRN_*),
# with their printf arguments as wildcards. Whole lines only: nothing else has this form.
LIBJPEG_MESSAGE = re.compile(
    rb"^(Improper call to JPEG library in state \d+"
    rb"|Not a JPEG file: starts with 0x[0-9a-f]+ 0x[0-9a-f]+"
    rb"|Premature end of (JPEG|input) file"
    rb"|Corrupt JPEG data: .+"
    rb"|Invalid JPEG file structure: .+"
    rb"|Bogus (marker length|Huffman table definition|sampling factors|JPEG colorspace"
    rb"|(DQT|DHT|DAC) (index|value) \S+)"
    rb"|Unsupported marker type 0x[0-9a-f]+"
    rb"|Unsupported JPEG (data precision \d+|process: SOF type 0x[0-9a-f]+)"
    rb"|(Huffman|Quantization|Arithmetic) table 0x[0-9a-f]+ was not defined"
    rb"|JPEG datastream contains no image"
    rb"|Empty (JPEG image \(DNL not supported\)|input file)"
    rb"|Invalid component ID \d+ in SOS"
    rb"|Invalid SOS parameters for sequential JPEG"
    rb"|Invalid progressive parameters .+"
    rb"|Inconsistent progression sequence for component \d+ coefficient \d+"
    rb"|Maximum supported image dimension is \d+ pixels"
    rb"|Huffman code size table overflow|Missing Huffman code table entry"
    rb"|Sampling factors too large for interleaved scan|Didn't expect more than one scan"
    rb"|Warning: unknown JFIF revision number \d+\.\d+"
    rb"|Unknown Adobe color transform code \d+)\r?$")


@contextlib.contextmanager
def without_libjpeg_messages():
    """For the duration, fd 2 (C and Python stderr) goes through the filter process; at the
    end the real stderr is back. Without a usable stderr or interpreter, a no-op."""
    with stderr_without(LIBJPEG_MESSAGE):
        yield
