from __future__ import annotations

import pytest

from leadflow.domain import countries
from leadflow.domain.countries import COUNTRIES, country_code, country_name


def test_table_is_complete_sorted_and_well_formed():
    assert len(COUNTRIES) == 249
    assert list(COUNTRIES) == sorted(COUNTRIES)
    alpha_3 = [a3 for a3, _ in COUNTRIES.values()]
    assert len(set(alpha_3)) == len(alpha_3)
    for alpha_2, (a3, name) in COUNTRIES.items():
        assert len(alpha_2) == 2 and alpha_2.isascii() and alpha_2.isupper()
        assert len(a3) == 3 and a3.isascii() and a3.isupper()
        assert name and name == name.strip()


@pytest.mark.parametrize(
    "value, code",
    [("no", "NO"), ("NO", "NO"), ("No", "NO"), (" de ", "DE"), ("gb", "GB"), ("us", "US"),
     ("in", "IN")],
)
def test_alpha_2_codes_in_any_case(value, code):
    assert country_code(value) == code


@pytest.mark.parametrize(
    "value, code",
    [("NOR", "NO"), ("nor", "NO"), ("USA", "US"), ("usa", "US"), ("GBR", "GB"), ("deu", "DE"),
     ("ARE", "AE"), ("CIV", "CI")],
)
def test_alpha_3_codes_in_any_case(value, code):
    assert country_code(value) == code


@pytest.mark.parametrize(
    "value, code",
    [
        ("norway", "NO"),
        ("  NORWAY\t", "NO"),
        ("Côte d'Ivoire", "CI"),
        ("Cote d'Ivoire", "CI"),
        ("côte d’ivoire", "CI"),
        ("COTE DIVOIRE", "CI"),
        ("The Netherlands", "NL"),
        ("the netherlands", "NL"),
        ("Netherlands", "NL"),
        ("Kingdom of the Netherlands", "NL"),
        ("The Bahamas", "BS"),
        ("Gambia", "GM"),
        ("Trinidad & Tobago", "TT"),
        ("Bosnia & Herzegovina", "BA"),
        ("Antigua and Barbuda", "AG"),
        ("St. Kitts & Nevis", "KN"),
        ("St Lucia", "LC"),
        ("Guinea Bissau", "GW"),
        ("Timor Leste", "TL"),
        ("Åland Islands", "AX"),
        ("Aland Islands", "AX"),
        ("Curacao", "CW"),
        ("Reunion", "RE"),
        ("Saint Barthélemy", "BL"),
        ("São Tomé and Príncipe", "ST"),
        # ISO short names, common names and official names
        ("Bolivia, Plurinational State of", "BO"),
        ("Plurinational State of Bolivia", "BO"),
        ("Korea, Republic of", "KR"),
        ("Korea, Democratic People's Republic of", "KP"),
        ("Democratic People's Republic of Korea", "KP"),
        ("Iran, Islamic Republic of", "IR"),
        ("Viet Nam", "VN"),
        ("Socialist Republic of Viet Nam", "VN"),
        ("Russian Federation", "RU"),
        ("Lao People's Democratic Republic", "LA"),
        ("Syrian Arab Republic", "SY"),
        ("Taiwan, Province of China", "TW"),
        ("United Kingdom of Great Britain and Northern Ireland", "GB"),
        ("Holy See (Vatican City State)", "VA"),
        ("Congo, The Democratic Republic of the", "CD"),
        ("Republic of the Congo", "CG"),
        ("Congo", "CG"),
        ("Palestine, State of", "PS"),
        ("the State of Palestine", "PS"),
        ("Virgin Islands, British", "VG"),
        ("Virgin Islands, U.S.", "VI"),
        ("US Virgin Islands", "VI"),
        ("People's Republic of China", "CN"),
        ("Hong Kong Special Administrative Region of China", "HK"),
    ],
)
def test_names_ignore_case_whitespace_accents_and_punctuation(value, code):
    assert country_code(value) == code


ALIASES = {
    "UK": "GB", "U.K.": "GB", "uk": "GB", "Great Britain": "GB", "England": "GB", "Scotland": "GB",
    "Wales": "GB", "Northern Ireland": "GB",
    "USA": "US", "U.S.": "US", "U.S.A.": "US", "United States of America": "US", "America": "US",
    "Russia": "RU", "South Korea": "KR", "Korea": "KR", "North Korea": "KP", "Iran": "IR",
    "Vietnam": "VN", "Syria": "SY", "Laos": "LA", "Bolivia": "BO", "Venezuela": "VE",
    "Tanzania": "TZ", "Moldova": "MD", "Czech Republic": "CZ", "Czechia": "CZ", "Holland": "NL",
    "UAE": "AE", "U.A.E.": "AE", "Taiwan": "TW", "Macedonia": "MK", "North Macedonia": "MK",
    "Ivory Coast": "CI", "Turkey": "TR", "Türkiye": "TR", "Turkiye": "TR", "Hong Kong": "HK",
    "Macau": "MO", "Macao": "MO", "Palestine": "PS", "Brunei": "BN", "Cape Verde": "CV",
    "Cabo Verde": "CV", "Swaziland": "SZ", "Eswatini": "SZ", "Burma": "MM", "Myanmar": "MM",
    "Vatican": "VA", "Vatican City": "VA", "Micronesia": "FM", "Saint Kitts": "KN",
    "St Kitts": "KN", "Saint Kitts and Nevis": "KN", "Saint Vincent": "VC", "East Timor": "TL",
    "KSA": "SA", "DRC": "CD", "DR Congo": "CD", "Falklands": "FK", "Republic of Ireland": "IE",
}


@pytest.mark.parametrize("value, code", sorted(ALIASES.items()))
def test_aliases(value, code):
    assert country_code(value) == code


@pytest.mark.parametrize("alias, code", sorted(countries._ALIASES.items()))
def test_every_shipped_alias_resolves(alias, code):
    assert code in COUNTRIES
    assert country_code(alias) == code


def test_every_other_iso_name_resolves_to_its_country():
    for code, names in countries._OTHER_NAMES.items():
        assert code in COUNTRIES
        for name in names:
            assert country_code(name) == code, name


def test_every_code_round_trips():
    for code, (alpha_3, name) in COUNTRIES.items():
        assert country_code(code) == code
        assert country_code(code.lower()) == code
        assert country_code(alpha_3) == code
        assert country_name(code) == name
        assert country_name(code.lower()) == name
        assert country_code(country_name(code)) == code
        assert country_code(name.upper()) == code


@pytest.mark.parametrize(
    "code, name",
    [("BO", "Bolivia"), ("TW", "Taiwan"), ("IR", "Iran"), ("KR", "South Korea"),
     ("KP", "North Korea"), ("RU", "Russia"), ("VN", "Vietnam"), ("GB", "United Kingdom"),
     ("US", "United States"), ("NO", "Norway"), ("CI", "Côte d'Ivoire"), ("SY", "Syria"),
     ("LA", "Laos"), ("TZ", "Tanzania")],
)
def test_country_name_uses_readable_short_names(code, name):
    assert country_name(code) == name


@pytest.mark.parametrize(
    "value", [None, 3, 3.0, True, False, "", "  ", "UK", "XX", "USA", "Norway", b"NO"]
)
def test_country_name_of_a_non_code_is_none(value):
    assert country_name(value) is None


@pytest.mark.parametrize(
    "value",
    ["unknown", "Unknown", "Europe", "Asia/Pacific Region", "Asia", "EU", "N/A", "n/a", "none", "-",
     "Narnia", "XX", "XYZ", "the", "The ", "123", "St."],
)
def test_unknown_text_is_none(value):
    assert country_code(value) is None


@pytest.mark.parametrize(
    "value",
    [None, 3, 0, 3.5, True, False, "", "  ", "\t\n", "Ü" * 300, "&&&", "...", "🇳🇴", b"NO",
     ["NO"], {"NO"}],
)
def test_odd_input_gives_none_without_raising(value):
    assert country_code(value) is None
    assert country_name(value) is None


LEAD_DATASET = [
    ("India", "IN"), ("United States", "US"), ("United Arab Emirates", "AE"), ("Singapore", "SG"),
    ("Saudi Arabia", "SA"), ("United Kingdom", "GB"), ("Australia", "AU"), ("Qatar", "QA"),
    ("Hong Kong", "HK"), ("Bahrain", "BH"), ("Oman", "OM"), ("France", "FR"), ("unknown", None),
    ("South Africa", "ZA"), ("Nigeria", "NG"), ("Germany", "DE"), ("Kuwait", "KW"),
    ("Canada", "CA"), ("Sweden", "SE"), ("Norway", "NO"), ("Asia/Pacific Region", None),
]


@pytest.mark.parametrize("value, code", LEAD_DATASET)
def test_values_from_a_lead_dataset(value, code):
    assert country_code(value) == code
