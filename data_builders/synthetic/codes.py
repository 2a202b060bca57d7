"""The code table of the synthetic generator: every code it can emit, its description and who may get it.

ICD-10-CM descriptions come from the ``simple-icd-10-cm`` package (the CDC tabular list, offline);
ATC names are WHO ATC/DDD index substance names; LOINC names are short forms of the LOINC long
common names (LOINC is copyright Regenstrief Institute, used under the LOINC license).

The table ships as ``resources/synthetic_codes.tsv`` (``code, description, sex, ages``). It is
generated from this module and `params`; regenerate it after changing either with::

    python -m behrt_hf.data_builders.synthetic.codes --write

``sex`` is ``F``/``M`` or empty (either), ``ages`` is empty (any age) or ``lo-hi[;lo-hi]`` in years,
half-open ``[lo, hi)``. The generator only emits a code to patients the table allows, and the test
suite checks that over a whole cohort.
"""

from __future__ import annotations

import csv
import functools
import os
import sys

from . import params as P
from .params import atc, icd, loinc

RESOURCE_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "resources",
                             "synthetic_codes.tsv")
ANY_AGE = ((0.0, 200.0),)
PREGNANCY_AGES = ((15.0, 50.0),)

ATC_NAMES = {
    "A02BC01": "omeprazole", "A02BC02": "pantoprazole", "A02BC05": "esomeprazole",
    "A04AA01": "ondansetron", "A06AD11": "lactulose", "A06AD65": "macrogol, combinations",
    "A07DA03": "loperamide", "A10AE04": "insulin glargine", "A10BA02": "metformin",
    "A10BB09": "gliclazide", "A10BH01": "sitagliptin", "A10BJ06": "semaglutide",
    "A10BK01": "dapagliflozin", "A10BK03": "empagliflozin", "A11CC03": "alfacalcidol",
    "A11CC05": "colecalciferol", "B01AA03": "warfarin", "B01AC04": "clopidogrel",
    "B01AC06": "acetylsalicylic acid", "B01AC24": "ticagrelor", "B01AE07": "dabigatran etexilate",
    "B01AF01": "rivaroxaban", "B01AF02": "apixaban", "B03AA07": "ferrous sulfate",
    "B03BB01": "folic acid", "B03XA01": "erythropoietin", "C01AA05": "digoxin",
    "C01BD01": "amiodarone", "C01DA02": "glyceryl trinitrate", "C03AA03": "hydrochlorothiazide",
    "C03BA11": "indapamide", "C03CA01": "furosemide", "C03DA01": "spironolactone",
    "C07AB07": "bisoprolol", "C07AG02": "carvedilol", "C08CA01": "amlodipine",
    "C08DB01": "diltiazem", "C09AA03": "lisinopril", "C09AA05": "ramipril", "C09CA01": "losartan",
    "C09DX04": "valsartan and sacubitril", "C10AA01": "simvastatin", "C10AA05": "atorvastatin",
    "C10AA07": "rosuvastatin", "C10AX09": "ezetimibe", "D01AC01": "clotrimazole",
    "D01BA02": "terbinafine", "D06AX01": "fusidic acid", "D07AA02": "hydrocortisone",
    "D07AC01": "betamethasone", "D10AD01": "tretinoin", "D10AF01": "clindamycin",
    "D10BA01": "isotretinoin", "G02BA03": "plastic IUD with progestogen",
    "G03AA07": "levonorgestrel and ethinylestradiol", "G03CA03": "estradiol",
    "G04CA02": "tamsulosin", "G04CB01": "finasteride", "H02AB02": "dexamethasone",
    "H02AB06": "prednisolone", "H03AA01": "levothyroxine sodium", "J01AA02": "doxycycline",
    "J01CA04": "amoxicillin", "J01CE02": "phenoxymethylpenicillin", "J01CF05": "flucloxacillin",
    "J01DB01": "cefalexin", "J01EA01": "trimethoprim", "J01FA10": "azithromycin",
    "J01MA02": "ciprofloxacin", "J01XE01": "nitrofurantoin", "J02AC01": "fluconazole",
    "J05AB01": "aciclovir", "J05AB11": "valaciclovir", "J05AH02": "oseltamivir",
    "J07AH08": "meningococcus A, C, Y, W-135, tetravalent purified polysaccharides antigen conjugated",
    "J07AJ52": "pertussis, purified antigen, combinations with toxoids",
    "J07AL02": "pneumococcus, purified polysaccharides antigen conjugated",
    "J07AM51": "tetanus toxoid, combinations with diphtheria toxoid",
    "J07BB02": "influenza, inactivated, split virus or surface antigen",
    "J07BC02": "hepatitis A, inactivated, whole virus",
    "J07BD52": "measles, combinations with mumps and rubella, live attenuated",
    "J07BH01": "rota virus, live attenuated", "J07BK01": "varicella, live attenuated",
    "J07BK03": "zoster, purified antigen",
    "J07BM03": "papillomavirus (human types 6, 11, 16, 18, 31, 33, 45, 52, 58)",
    "J07BN01": "covid-19, RNA-based vaccine",
    "J07CA02": "diphtheria-pertussis-poliomyelitis-tetanus",
    "J07CA09": "diphtheria-haemophilus influenzae B-pertussis-poliomyelitis-tetanus-hepatitis B",
    "L02AE02": "leuprorelin", "L02BA01": "tamoxifen", "L02BB03": "bicalutamide",
    "L02BG03": "anastrozole", "L02BG04": "letrozole", "M01AE01": "ibuprofen", "M01AE02": "naproxen",
    "M02AA15": "diclofenac (topical)", "M04AA01": "allopurinol", "M05BA04": "alendronic acid",
    "N02AX02": "tramadol", "N02BE01": "paracetamol", "N02CC01": "sumatriptan",
    "N03AX12": "gabapentin", "N03AX16": "pregabalin", "N04BA02": "levodopa and decarboxylase inhibitor",
    "N05CF01": "zopiclone", "N06AA09": "amitriptyline", "N06AB03": "fluoxetine",
    "N06AB04": "citalopram", "N06AB06": "sertraline", "N06AB10": "escitalopram",
    "N06AX11": "mirtazapine", "N06AX16": "venlafaxine", "N06BA04": "methylphenidate",
    "N06BA09": "atomoxetine", "N06DA02": "donepezil", "N06DX01": "memantine",
    "N07BA01": "nicotine", "N07BA03": "varenicline", "R01AD09": "mometasone (nasal)",
    "R03AC02": "salbutamol", "R03AK06": "salmeterol and fluticasone",
    "R03AL03": "vilanterol and umeclidinium bromide",
    "R03AL08": "vilanterol, umeclidinium bromide and fluticasone furoate", "R03BA02": "budesonide",
    "R03BA05": "fluticasone", "R03BB04": "tiotropium bromide", "R03DC03": "montelukast",
    "R03DX07": "roflumilast",
    "R06AE07": "cetirizine", "S01AA01": "chloramphenicol (eye)", "S01EE01": "latanoprost",
    "V03AE02": "sevelamer",
}

LOINC_NAMES = {
    "1504-0": "Glucose [Mass/volume] in Serum or Plasma --1 hour post 50 g glucose PO",
    "1558-6": "Fasting glucose [Mass/volume] in Serum or Plasma",
    "1742-6": "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
    "1988-5": "C reactive protein [Mass/volume] in Serum or Plasma",
    "2085-9": "Cholesterol in HDL [Mass/volume] in Serum or Plasma",
    "2093-3": "Cholesterol [Mass/volume] in Serum or Plasma",
    "2106-3": "Choriogonadotropin (pregnancy test) [Presence] in Urine",
    "2132-9": "Cobalamin (Vitamin B12) [Mass/volume] in Serum or Plasma",
    "2160-0": "Creatinine [Mass/volume] in Serum or Plasma",
    "2276-4": "Ferritin [Mass/volume] in Serum or Plasma",
    "2345-7": "Glucose [Mass/volume] in Serum or Plasma",
    "2571-8": "Triglyceride [Mass/volume] in Serum or Plasma",
    "2777-1": "Phosphate [Mass/volume] in Serum or Plasma",
    "2823-3": "Potassium [Moles/volume] in Serum or Plasma",
    "2857-1": "Prostate specific Ag [Mass/volume] in Serum or Plasma",
    "2951-2": "Sodium [Moles/volume] in Serum or Plasma",
    "3016-3": "Thyrotropin [Units/volume] in Serum or Plasma",
    "3024-7": "Thyroxine (T4) free [Mass/volume] in Serum or Plasma",
    "3084-1": "Urate [Mass/volume] in Serum or Plasma",
    "4548-4": "Hemoglobin A1c/Hemoglobin.total in Blood",
    "5195-3": "Hepatitis B virus surface Ag [Presence] in Serum",
    "6301-6": "INR in Platelet poor plasma by Coagulation assay",
    "6598-7": "Troponin T.cardiac [Mass/volume] in Serum or Plasma",
    "6690-2": "Leukocytes [#/volume] in Blood by Automated count",
    "630-4": "Bacteria identified in Urine by Culture",
    "718-7": "Hemoglobin [Mass/volume] in Blood",
    "8302-2": "Body height",
    "8462-4": "Diastolic blood pressure",
    "8480-6": "Systolic blood pressure",
    "8867-4": "Heart rate",
    "9318-7": "Albumin/Creatinine [Mass Ratio] in Urine",
    "10839-9": "Troponin I.cardiac [Mass/volume] in Serum or Plasma",
    "13457-7": "Cholesterol in LDL [Mass/volume] in Serum or Plasma by calculation",
    "14959-1": "Microalbumin/Creatinine [Mass Ratio] in Urine",
    "19926-5": "FEV1/FVC",
    "20150-9": "FEV1",
    "24323-8": "Comprehensive metabolic 2000 panel - Serum or Plasma",
    "24331-1": "Lipid 1996 panel - Serum or Plasma",
    "29463-7": "Body weight",
    "30934-4": "Natriuretic peptide B [Mass/volume] in Serum or Plasma",
    "33762-6": "Natriuretic peptide.B prohormone N-Terminal [Mass/volume] in Serum or Plasma",
    "33914-3": "Glomerular filtration rate/1.73 sq M.predicted (MDRD) in Serum or Plasma",
    "39156-5": "Body mass index (BMI) [Ratio]",
    "58410-2": "CBC panel - Blood by Automated count",
    "59408-5": "Oxygen saturation in Arterial blood by Pulse oximetry",
    "72166-2": "Tobacco smoking status",
    "94500-6": "SARS-CoV-2 (COVID-19) RNA [Presence] in Respiratory system specimen by NAA",
}

# Who may get a code beyond what the disease modules imply: code -> (sex or None, age ranges).
_F, _M = "F", "M"
_PAEDIATRIC = {
    icd("Z00.110"): (None, ((0.0, 8 / 365.25),)),
    icd("Z00.129"): (None, ((0.0, 18.0),)), icd("Z00.121"): (None, ((0.0, 18.0),)),
    icd("J21.9"): (None, ((0.0, 2.0),)), icd("J05.0"): (None, ((0.25, 6.0),)),
    icd("H66.90"): (None, ((0.25, 18.0),)), icd("H65.90"): (None, ((0.25, 18.0),)),
    icd("L22"): (None, ((0.0, 3.0),)), icd("B08.4"): (None, ((0.5, 10.0),)),
    icd("B01.9"): (None, ((1.0, 15.0),)), icd("L01.00"): (None, ((1.0, 15.0),)),
    icd("R56.00"): (None, ((0.5, 6.0),)), icd("Z02.0"): (None, ((4.0, 18.0),)),
    atc("J07CA09"): (None, ((0.0, 2.0),)), atc("J07BH01"): (None, ((0.0, 1.0),)),
    atc("J07BD52"): (None, ((0.9, 18.0),)), atc("J07BK01"): (None, ((0.9, 18.0),)),
    atc("J07BC02"): (None, ((0.9, 18.0),)), atc("J07CA02"): (None, ((3.0, 18.0),)),
    atc("J07AJ52"): (None, ((9.0, 18.0),)), atc("J07AH08"): (None, ((9.0, 18.0),)),
    atc("J07BM03"): (None, ((9.0, 27.0),)),
}
_ADULT = {
    icd("Z00.00"): (None, ((18.0, 200.0),)), icd("Z00.01"): (None, ((18.0, 200.0),)),
    atc("J07AL02"): (None, ((0.0, 2.0), (65.0, 200.0))),
    atc("J07AM51"): (None, ((18.0, 200.0),)), atc("J07BK03"): (None, ((50.0, 200.0),)),
    atc("J07BN01"): (None, ((12.0, 200.0),)),
    icd("L70.0"): (None, ((11.0, 40.0),)), icd("M54.50"): (None, ((12.0, 200.0),)),
    icd("M54.2"): (None, ((12.0, 200.0),)), icd("F51.01"): (None, ((14.0, 200.0),)),
    icd("G47.00"): (None, ((14.0, 200.0),)), icd("F10.10"): (None, ((14.0, 200.0),)),
    icd("F10.20"): (None, ((16.0, 200.0),)), icd("F43.10"): (None, ((6.0, 200.0),)),
    icd("F41.9"): (None, ((8.0, 200.0),)), icd("F43.21"): (None, ((8.0, 200.0),)),
    icd("H52.4"): (None, ((40.0, 200.0),)), icd("H25.9"): (None, ((50.0, 200.0),)),
    icd("H40.9"): (None, ((40.0, 200.0),)), icd("H81.10"): (None, ((18.0, 200.0),)),
    icd("K64.9"): (None, ((18.0, 200.0),)), icd("K57.30"): (None, ((40.0, 200.0),)),
    icd("K80.20"): (None, ((18.0, 200.0),)), icd("K35.80"): (None, ((4.0, 80.0),)),
    icd("K58.9"): (None, ((12.0, 200.0),)), icd("M75.100"): (None, ((30.0, 200.0),)),
    icd("M77.10"): (None, ((20.0, 200.0),)), icd("M72.2"): (None, ((16.0, 200.0),)),
    icd("B35.1"): (None, ((18.0, 200.0),)), icd("B02.9"): (None, ((20.0, 200.0),)),
    icd("L40.0"): (None, ((10.0, 200.0),)), icd("S13.4XXA"): (None, ((16.0, 200.0),)),
    icd("G44.209"): (None, ((8.0, 200.0),)), icd("R07.9"): (None, ((12.0, 200.0),)),
    icd("Z76.0"): (None, ((18.0, 200.0),)), icd("J30.2"): (None, ((2.0, 200.0),)),
    icd("J32.9"): (None, ((5.0, 200.0),)), icd("J01.90"): (None, ((2.0, 200.0),)),
    icd("H52.13"): (None, ((5.0, 200.0),)), icd("R53.83"): (None, ((5.0, 200.0),)),
    atc("D10BA01"): (None, ((12.0, 200.0),)),
    icd("S42.001A"): (None, ((1.0, 200.0),)), icd("S62.609A"): (None, ((2.0, 200.0),)),
    icd("S92.901A"): (None, ((2.0, 200.0),)), icd("S83.91XA"): (None, ((4.0, 200.0),)),
    icd("S43.401A"): (None, ((4.0, 200.0),)), icd("S39.012A"): (None, ((8.0, 200.0),)),
    icd("E55.9"): (None, ((1.0, 200.0),)), icd("D50.9"): (None, ((0.5, 200.0),)),
    icd("D64.9"): (None, ((1.0, 200.0),)), icd("R00.2"): (None, ((5.0, 200.0),)),
    icd("R55"): (None, ((5.0, 200.0),)), icd("R63.4"): (None, ((2.0, 200.0),)),
    icd("R06.02"): (None, ((2.0, 200.0),)), icd("R60.0"): (None, ((18.0, 200.0),)),
    icd("R42"): (None, ((5.0, 200.0),)), icd("H91.90"): (None, ((2.0, 200.0),)),
    icd("K29.70"): (None, ((12.0, 200.0),)), icd("Z71.3"): (None, ((2.0, 200.0),)),
    icd("F41.1"): (None, ((10.0, 200.0),)),
}
_FEMALE = {
    icd("Z30.011"): (_F, PREGNANCY_AGES), icd("Z30.41"): (_F, PREGNANCY_AGES),
    icd("Z30.430"): (_F, PREGNANCY_AGES), atc("G03AA07"): (_F, PREGNANCY_AGES),
    atc("G02BA03"): (_F, PREGNANCY_AGES), icd("Z01.419"): (_F, ((18.0, 200.0),)),
    icd("N95.1"): (_F, ((45.0, 60.0),)), atc("G03CA03"): (_F, ((45.0, 200.0),)),
    icd("E28.2"): (_F, ((15.0, 45.0),)), icd("N80.9"): (_F, PREGNANCY_AGES),
    icd("N94.6"): (_F, ((12.0, 50.0),)), icd("N92.0"): (_F, ((12.0, 55.0),)),
    icd("N76.0"): (_F, ((12.0, 200.0),)), icd("B37.31"): (_F, ((12.0, 200.0),)),
    icd("Z12.31"): (_F, ((40.0, 200.0),)), icd("Z12.4"): (_F, ((21.0, 70.0),)),
    atc("L02BA01"): (_F, ((30.0, 200.0),)), atc("L02BG03"): (_F, ((30.0, 200.0),)),
    atc("L02BG04"): (_F, ((30.0, 200.0),)),
}
_MALE = {
    icd("Z12.5"): (_M, ((40.0, 200.0),)), loinc("2857-1"): (_M, ((40.0, 200.0),)),
    atc("G04CA02"): (_M, ((40.0, 200.0),)), atc("G04CB01"): (_M, ((40.0, 200.0),)),
    atc("L02AE02"): (_M, ((40.0, 200.0),)), atc("L02BB03"): (_M, ((40.0, 200.0),)),
    icd("N41.0"): (_M, ((18.0, 200.0),)), icd("N45.1"): (_M, ((12.0, 200.0),)),
}
# Pregnancy module codes (F 15-50)
PREGNANCY_CODES = tuple(icd(c) for c in (
    "Z32.01", "Z34.01", "Z34.02", "Z34.03", "Z34.81", "Z34.82", "Z34.83", "Z3A.12", "Z3A.20", "Z3A.28",
    "Z3A.36", "Z3A.39", "O03.9", "O80", "Z37.0", "Z39.2", "O24.419", "O13.3",
)) + (loinc("2106-3"), loinc("1504-0"))
_PREGNANCY = {code: (_F, PREGNANCY_AGES) for code in PREGNANCY_CODES}
# BMI classes written with an obesity diagnosis (adults)
BMI_CODES = tuple(icd(f"Z68.{n}") for n in (30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 41))
_BMI = {code: (None, ((20.0, 200.0),)) for code in BMI_CODES}
# Extra codes of the pregnancy module that are not restricted
PREGNANCY_EXTRAS = (loinc("58410-2"), loinc("5195-3"), atc("B03BB01"), atc("A10BA02"))


def _condition_restrictions() -> dict:
    """Restrictions implied by the disease modules: a condition's own ICD codes are limited to the
    sexes and ages in which its hazard is non-zero."""
    out = {}
    for c in P.CONDITIONS:
        sex = _M if c.female == 0 else _F if c.male == 0 else None
        ages = ((float(c.min_age), 200.0),)
        for code in {c.dx, c.history or c.dx, *(code for code, _ in c.review)}:
            if code.startswith("ICD10CM//") and code not in _PREGNANCY:
                out[code] = (sex, ages)
    return out


@functools.lru_cache(maxsize=None)
def restrictions() -> dict:
    """code -> (sex or None, ((min_age, max_age), ...)); codes absent are allowed for everyone."""
    out = _condition_restrictions()
    for table in (_PAEDIATRIC, _ADULT, _FEMALE, _MALE, _PREGNANCY, _BMI):
        out.update(table)
    return out


def allowed(code: str, sex: str, age: float) -> bool:
    rule = restrictions().get(code)
    if rule is None:
        return True
    rsex, ranges = rule
    return (rsex is None or rsex == sex) and any(lo <= age < hi for lo, hi in ranges)


def _collect_codes() -> set:
    """Every code the generator can emit (from params and this module)."""
    codes = set(restrictions())
    for c in P.CONDITIONS:
        codes.update({c.dx, c.history or c.dx})
        codes.update(code for code, _ in c.review + c.labs + c.acute_codes + c.dx_codes)
        codes.update(code for line in c.lines for code, _ in line)
        if c.flare:
            codes.update(code for code, _ in c.flare[1])
    codes.update(code for code, _, _ in P.FALL_INJURIES)
    codes.add(P.EXACERBATION_MARKER)
    for kind in P.EXACERBATION_KINDS:
        codes.update(code for code, _ in P.EXACERBATION_CODES[kind])
        codes.update(P.STEP_UP_CODES[kind])
    for pool in P.POOLS.values():
        for code, _, _, extras in pool:
            codes.add(code)
            codes.update(extra for extra, _ in extras)
    codes.update(code for code, _ in P.ADULT_CHECKUP + P.CHILD_CHECKUP)
    for code, _, _, _, _, extras in P.SCREENING:
        codes.add(code)
        codes.update(extras)
    for _, vaccines in P.WELL_CHILD:
        codes.update(vaccines)
    codes.update((P.IMMUNIZATION, P.NEWBORN_CHECK, P.FLU_VACCINE, *P.CHILD_EXAM, *P.ADULT_EXAM))
    codes.update(code for code, *_ in P.ADULT_VACCINES)
    codes.update(PREGNANCY_CODES + BMI_CODES + PREGNANCY_EXTRAS)
    return codes


def describe(code: str) -> str:
    system, _, value = code.partition("//")
    if system == "ICD10CM":
        import simple_icd_10_cm as cm

        return cm.get_description(value)
    if system == "ATC":
        return ATC_NAMES[value]
    if system == "LOINC":
        return LOINC_NAMES[value]
    raise KeyError(f"unknown code system in {code!r}")


def _format_ages(ranges) -> str:
    if ranges == ANY_AGE:
        return ""
    return ";".join(f"{lo:g}-{hi:g}" for lo, hi in ranges)


def build_table() -> list[dict]:
    """Rows of the shipped code table, sorted by code."""
    rules = restrictions()
    rows = []
    for code in sorted(_collect_codes()):
        sex, ranges = rules.get(code, (None, ANY_AGE))
        rows.append({"code": code, "description": describe(code), "sex": sex or "",
                     "ages": _format_ages(ranges)})
    return rows


@functools.lru_cache(maxsize=None)
def code_table() -> dict:
    """code -> description, read from the shipped TSV."""
    with open(RESOURCE_PATH, newline="", encoding="utf-8") as f:
        return {row["code"]: row["description"] for row in csv.DictReader(f, delimiter="\t")}


def write_table(path: str = RESOURCE_PATH) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["code", "description", "sex", "ages"], delimiter="\t",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(build_table())


__all__ = ["allowed", "build_table", "code_table", "describe", "restrictions", "write_table"]


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    if "--write" in sys.argv[1:]:
        write_table()
        print(f"wrote {RESOURCE_PATH}")
    else:
        print("usage: python -m behrt_hf.data_builders.synthetic.codes --write")
