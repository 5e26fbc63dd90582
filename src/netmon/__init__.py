"""netmon: network monitoring on the Python network-automation stack."""

from netmon.errors import NetmonError
from netmon.records import DeviceEvent, Sample, SeriesKey

__version__ = "0.1.0"

__all__ = ["DeviceEvent", "NetmonError", "Sample", "SeriesKey", "__version__"]
