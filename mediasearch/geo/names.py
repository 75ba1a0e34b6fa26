"""Place names as compared: folded (lowercase, accents removed, apostrophes and dashes as spaces)."""

from __future__ import annotations

import re
import unicodedata

_SEPARATORS = re.compile(r"[\s\-‐‑–—_/.,'’`]+")

# Common names of countries that GeoNames spells otherwise, and the usual French, German and Spanish
# names of the countries people travel to most (the gazetteer's own names are English).
COUNTRY_ALIASES: dict[str, tuple[str, ...]] = {
    "US": (
        "usa",
        "u s a",
        "us",
        "america",
        "the united states",
        "united states of america",
        "etats unis",
        "vereinigte staaten",
        "estados unidos",
    ),
    "GB": (
        "uk",
        "u k",
        "britain",
        "great britain",
        "the uk",
        "the united kingdom",
        "royaume uni",
        "grossbritannien",
        "reino unido",
    ),
    "NL": ("netherlands", "holland", "pays bas", "niederlande", "paises bajos", "holanda"),
    "CZ": ("czech republic", "tchequie", "tschechien", "chequia", "republique tcheque"),
    "KR": ("korea", "coree du sud", "sudkorea", "corea del sur"),
    "FR": ("frankreich", "francia"),
    "DE": ("allemagne", "deutschland", "alemania"),
    "ES": ("espagne", "spanien", "espana"),
    "IT": ("italie", "italien", "italia"),
    "JP": ("japon",),
    "CH": ("suisse", "schweiz", "suiza", "svizzera"),
    "AT": ("autriche", "osterreich", "oesterreich"),
    "BE": ("belgique", "belgien", "belgica"),
    "PT": ("portugal",),
    "GR": ("grece", "griechenland", "grecia"),
    "MA": ("maroc", "marokko", "marruecos"),
    "MX": ("mexique", "mexiko", "mejico"),
    "BR": ("bresil", "brasilien", "brasil"),
    "CN": ("chine",),
    "TH": ("thailande", "thailandia"),
    "TR": ("turquie", "turkei", "turquia", "turkiye"),
    "HR": ("croatie", "kroatien", "croacia"),
    "NO": ("norvege", "norwegen", "noruega"),
    "SE": ("suede", "schweden", "suecia"),
    "DK": ("danemark", "dinamarca"),
    "IE": ("irlande", "irland", "irlanda"),
    "CA": ("kanada",),
    "AU": ("australie", "australien"),
    "EG": ("egypte", "agypten", "egipto"),
    "IS": ("islande", "islandia"),
    "VA": ("vatican city",),
    "CI": ("cote d ivoire",),
    "PS": ("palestine",),
}


def fold(text: str) -> str:
    """'Zürich' → 'zurich', "Côte d'Azur" → 'cote d azur': how names are compared and stored in ``places``."""
    if text.isascii():
        return _SEPARATORS.sub(" ", text.lower()).strip()
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _SEPARATORS.sub(" ", stripped.replace("ß", "ss")).strip()
