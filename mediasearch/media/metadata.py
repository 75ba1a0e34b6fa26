"""What a file says about itself: size as shown, capture date, camera and place.

From EXIF (IFD0, the EXIF and GPS sub-IFDs), from XMP packets (photos that carry only XMP: many
editors and phones write GPS and camera there), from CIFF (old Canon CRW) and from the metadata keys of
video containers (QuickTime and Android keys, ISO 6709 locations). Standard library only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = [
    "MediaMeta",
    "camera_name",
    "exif_camera",
    "exif_date",
    "exif_gps",
    "image_meta",
    "one_line",
    "with_xmp",
    "xmp_fields",
]

_EXIF_IFD = 0x8769
_TAG_MAKE, _TAG_MODEL, _TAG_DATETIME = 0x010F, 0x0110, 0x0132
_TAG_DATETIME_ORIGINAL, _TAG_OFFSET, _TAG_OFFSET_ORIGINAL = 0x9003, 0x9010, 0x9011
_GPS_IFD = 0x8825
_TAG_LAT_REF, _TAG_LAT, _TAG_LON_REF, _TAG_LON = 1, 2, 3, 4
_SWAPPED_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that turn the picture by 90 degrees
_VIDEO_DATE_KEYS = ("com.apple.quicktime.creationdate", "creation_time", "date")
_VIDEO_MAKE_KEYS = ("com.apple.quicktime.make", "com.android.manufacturer", "make")
_VIDEO_MODEL_KEYS = ("com.apple.quicktime.model", "com.android.model", "model")
_VIDEO_PLACE_KEYS = ("com.apple.quicktime.location.ISO6709", "location")  # ISO 6709: "+48.8584+002.2945+035/"
_ISO6709 = re.compile(r"([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class MediaMeta:
    """Size as displayed (orientation applied), capture date (unix time), camera, video duration, and
    where it was taken (EXIF GPS, decimal degrees) when known."""

    width: int
    height: int
    date: float | None = None
    camera: str | None = None
    duration: float | None = None
    lat: float | None = None
    lon: float | None = None


def image_meta(size: tuple[int, int], exif: Mapping[int, Any]) -> MediaMeta:
    width, height = size
    if exif.get(0x0112) in _SWAPPED_ORIENTATIONS:
        width, height = height, width
    lat, lon = exif_gps(exif)
    return MediaMeta(width, height, exif_date(exif), exif_camera(exif), lat=lat, lon=lon)


def exif_gps(exif: Any) -> tuple[float | None, float | None]:
    """GPSLatitude/GPSLongitude with their N/S and E/W references, in decimal degrees; (None, None)
    when absent, malformed or out of range (and for the 0,0 that some phones write without a fix)."""
    try:
        gps = exif.get_ifd(_GPS_IFD) if hasattr(exif, "get_ifd") else exif.get(_GPS_IFD)
        lat = _gps_degrees(gps.get(_TAG_LAT), gps.get(_TAG_LAT_REF), "S")
        lon = _gps_degrees(gps.get(_TAG_LON), gps.get(_TAG_LON_REF), "W")
    except Exception:  # a malformed GPS IFD must not cost the picture
        return None, None
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180) or lat == lon == 0:
        return None, None
    return lat, lon


def _gps_degrees(value: Any, ref: Any, negative: str) -> float | None:
    """(degrees, minutes, seconds) rationals (or one number) and a reference letter → signed degrees."""
    if value is None:
        return None
    parts = [float(v) for v in (value if isinstance(value, (tuple, list)) else (value,))][:3]
    degrees = sum(p / 60**i for i, p in enumerate(parts))
    if not math.isfinite(degrees):
        return None
    ref_s = ref.decode("ascii", "replace") if isinstance(ref, bytes) else str(ref or "")
    return -degrees if ref_s.strip("\x00 ").upper() == negative else degrees


def exif_date(exif: Any) -> float | None:
    """DateTimeOriginal, else DateTime, as unix time (local time unless an offset tag says otherwise)."""
    try:
        sub = exif.get_ifd(_EXIF_IFD)
    except Exception:  # a malformed sub-IFD must not cost the picture
        sub = {}
    candidates = (
        (sub.get(_TAG_DATETIME_ORIGINAL), sub.get(_TAG_OFFSET_ORIGINAL)),
        (exif.get(_TAG_DATETIME), sub.get(_TAG_OFFSET)),
    )
    for value, offset in candidates:
        stamp = _parse_exif_datetime(value, offset)
        if stamp is not None:
            return stamp
    return None


def _parse_exif_datetime(value: object, offset: object) -> float | None:
    if not isinstance(value, str):
        return None
    text = value.strip("\x00 ")[:19]
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S"):
        try:
            moment = datetime.strptime(text, fmt)
        except ValueError:
            continue
        tz = _parse_utc_offset(offset)
        return _unix_time(moment.replace(tzinfo=tz) if tz else moment)
    return None


def _parse_utc_offset(value: object) -> timezone | None:
    match = re.fullmatch(r"([+-])(\d\d):?(\d\d)", value.strip("\x00 ")) if isinstance(value, str) else None
    if match is None:
        return None
    sign = -1 if match.group(1) == "-" else 1
    return timezone(sign * timedelta(hours=int(match.group(2)), minutes=int(match.group(3))))


def exif_camera(exif: Mapping[int, Any]) -> str | None:
    return camera_name(exif.get(_TAG_MAKE), exif.get(_TAG_MODEL))


def camera_name(make: object, model: object) -> str | None:
    """ "Make Model", without repeating the make when the model already starts with it."""
    make_s = make.strip("\x00 ") if isinstance(make, str) else ""
    model_s = model.strip("\x00 ") if isinstance(model, str) else ""
    if make_s and model_s.lower().startswith(make_s.lower()):
        return model_s
    return " ".join(p for p in (make_s, model_s) if p) or None


def _unix_time(moment: datetime) -> float | None:
    """Unix time of `moment` (naive = local time); None for placeholder dates (before 1971)."""
    if moment.year < 1971:
        return None
    try:
        return moment.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def video_date(metadata: Mapping[str, str]) -> float | None:
    for key in _VIDEO_DATE_KEYS:
        value = metadata.get(key)
        if value:
            stamp = _parse_iso_datetime(value)
            if stamp is not None:
                return stamp
    return None


def video_place(metadata: Mapping[str, str]) -> tuple[float, float] | None:
    """Where a phone recorded the video: the ISO 6709 decimal-degree location phones write."""
    for key in _VIDEO_PLACE_KEYS:
        match = _ISO6709.match(metadata.get(key) or "")
        if match is not None:
            lat, lon = float(match.group(1)), float(match.group(2))
            if -90 <= lat <= 90 and -180 <= lon <= 180 and not lat == lon == 0:
                return lat, lon
    return None


def _parse_iso_datetime(text: str) -> float | None:
    """ISO 8601 as written by cameras ("...Z", "...+0200", naive = local time)."""
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    text = re.sub(r"([+-]\d\d)(\d\d)$", r"\1:\2", text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return _unix_time(moment)


def video_camera(metadata: Mapping[str, str]) -> str | None:
    return camera_name(_first_key(metadata, _VIDEO_MAKE_KEYS), _first_key(metadata, _VIDEO_MODEL_KEYS))


def _first_key(metadata: Mapping[str, str], keys: Sequence[str]) -> str | None:
    return next((metadata[k] for k in keys if metadata.get(k)), None)


def one_line(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------------------------- XMP

_XMP_FIELDS = {
    "lat": ("exif:GPSLatitude",),
    "lon": ("exif:GPSLongitude",),
    "make": ("tiff:Make", "exifEX:Make"),
    "model": ("tiff:Model", "exifEX:Model"),
    "date": ("exif:DateTimeOriginal", "xmp:CreateDate", "photoshop:DateCreated", "exif:DateTimeDigitized"),
}
_XMP_DEGREES = re.compile(r"\s*(\d+(?:\.\d+)?)(?:,(\d+(?:\.\d+)?))?(?:,(\d+(?:\.\d+)?))?\s*([NSEW])\s*$", re.I)


def xmp_value(xmp: str, name: str) -> str | None:
    """One simple property of an XMP packet, written as an attribute (name="v") or an element
    (<name>v</name>); None when absent."""
    prop = re.escape(name)
    match = re.search(rf"{prop}\s*=\s*\"([^\"]*)\"", xmp) or re.search(rf"<{prop}>\s*([^<]*?)\s*</{prop}>", xmp)
    return match.group(1).strip() if match else None


def xmp_fields(packet: bytes | str) -> dict[str, Any]:
    """What an XMP packet says of place (decimal degrees), camera and capture date (unix time)."""
    xmp = packet.decode("utf-8", "replace") if isinstance(packet, bytes) else packet
    found: dict[str, Any] = {}
    for key, names in _XMP_FIELDS.items():
        value = next((v for v in (xmp_value(xmp, n) for n in names) if v), None)
        if value is not None:
            found[key] = value
    out: dict[str, Any] = {}
    lat, lon = _xmp_degrees(found.get("lat")), _xmp_degrees(found.get("lon"))
    if lat is not None and lon is not None and -90 <= lat <= 90 and -180 <= lon <= 180 and not lat == lon == 0:
        out["lat"], out["lon"] = lat, lon
    camera = camera_name(found.get("make"), found.get("model"))
    if camera:
        out["camera"] = camera
    date = _parse_iso_datetime(found["date"]) if "date" in found else None
    if date is not None:
        out["date"] = date
    return out


def _xmp_degrees(value: str | None) -> float | None:
    """XMP's GPSCoordinate ("48,51.2906N" or "48,51,17.44N") as signed decimal degrees."""
    match = _XMP_DEGREES.match(value or "")
    if match is None:
        return None
    degrees = sum(float(part) / 60**i for i, part in enumerate(match.groups()[:3]) if part is not None)
    return -degrees if match.group(4).upper() in "SW" else degrees


def with_xmp(meta: MediaMeta, packet: bytes | str | None) -> MediaMeta:
    """``meta`` with what EXIF did not give (place, camera, date) taken from the XMP packet, if any."""
    if packet is None or (meta.lat is not None and meta.camera is not None and meta.date is not None):
        return meta
    try:
        found = xmp_fields(packet)
    except Exception:  # a malformed packet costs its metadata, never the picture
        return meta
    lat, lon = (meta.lat, meta.lon) if meta.lat is not None else (found.get("lat"), found.get("lon"))
    return MediaMeta(
        meta.width,
        meta.height,
        meta.date if meta.date is not None else found.get("date"),
        meta.camera or found.get("camera"),
        meta.duration,
        lat=lat,
        lon=lon,
    )
