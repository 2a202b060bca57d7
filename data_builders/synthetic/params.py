"""Parameters of the synthetic EHR generator: disease modules, care pools, schedules, targets.

Everything the generator can emit is named here, as MEDS-style codes ``SYSTEM//CODE``. Rates are
events per 1,000 person-years at anchor ages (log-linearly interpolated to one-year bands, see
`hazards.interpolate_rates`); the hazard of a condition is that baseline times the product of the
hazard ratios of the conditions already *recorded* (diagnosed at a visit at least 365 days earlier,
or at the registration visit). Sources for the targets are in ``TARGET_SOURCES`` and the card.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def icd(code: str) -> str:
    return f"ICD10CM//{code}"


def atc(code: str) -> str:
    return f"ATC//{code}"


def loinc(code: str) -> str:
    return f"LOINC//{code}"


@dataclass(frozen=True)
class Condition:
    """One disease module (or risk factor) of the generating process.

    Attributes:
        name: short identifier used in hazard-ratio tables.
        title: human-readable name (reports, card).
        dx: the diagnosis code written at the visit that records the condition (its *marker*:
            nothing else emits it before then).
        rates: ``(age, events per 1,000 person-years)`` anchors of the baseline incidence.
        female, male: multipliers of the baseline per sex (0 = never in that sex).
        min_age, max_age: the baseline is zero outside ``[min_age, max_age)``.
        risks: hazard ratio per recorded condition name.
        requires: the hazard is zero until all of these are recorded (complications, stages).
        acute: onset makes the patient present at once (a visit at the onset time).
        recurrent: the event can happen again (falls); only with ``acute``.
        chronic: counts towards the chronic burden that raises the visit rate.
        history: code written at the registration visit when the onset was before registration
            (defaults to ``dx``); for acute events that are history by then (old MI, past stroke).
        review: ``(code, weight)`` codes written when the condition is reviewed at a later visit.
        review_prob: probability that a recorded condition is reviewed at a routine visit.
        lines: treatment lines, each a tuple of ``(ATC code, weight)`` alternatives; one drug per
            line is chosen per patient; line ``k+1`` is added ``Exp(escalation_years)`` after line
            ``k``; line 1 starts at diagnosis (written from the next visit on).
        escalation_years: mean time between treatment lines.
        labs: ``(LOINC code, probability)`` monitoring labs at a review.
        acute_codes: ``(code, probability)`` extra codes at the onset visit of an acute event.
        dx_codes: ``(code, probability)`` extra codes at the diagnosing visit.
        flare: ``(probability per review, ((code, probability), ...))``: an exacerbation written at a
            review (COPD/asthma exacerbations); descriptive only, not an input to any hazard.
        implies: conditions recorded together with this one (an MI records coronary disease).
        supersedes: a condition this one replaces in reviews (CKD stage 4 replaces stage 3).
        hazard: False for conditions recorded by another module (pregnancy complications).
        enrichment: multiplier of the baseline beyond the published rates (1 = none). Used only to
            make a task event common enough to evaluate; the card and the report say so.
    """

    name: str
    title: str
    dx: str
    rates: tuple = ()
    female: float = 1.0
    male: float = 1.0
    min_age: float = 0.0
    max_age: float = 110.0
    risks: dict = field(default_factory=dict)
    requires: tuple = ()
    acute: bool = False
    recurrent: bool = False
    chronic: bool = True
    history: str | None = None
    review: tuple = ()
    review_prob: float = 0.5
    lines: tuple = ()
    escalation_years: float = 4.0
    labs: tuple = ()
    acute_codes: tuple = ()
    dx_codes: tuple = ()
    flare: tuple = ()
    implies: tuple = ()
    supersedes: str | None = None
    hazard: bool = True
    enrichment: float = 1.0


_LIPIDS = ((loinc("2093-3"), 0.35), (loinc("13457-7"), 0.35), (loinc("2085-9"), 0.25), (loinc("2571-8"), 0.25))
_RENAL = ((loinc("2160-0"), 0.45), (loinc("33914-3"), 0.35), (loinc("2823-3"), 0.3), (loinc("2951-2"), 0.2))

CONDITIONS: tuple[Condition, ...] = (
    # --- risk factors (recorded, not counted as chronic burden) -----------------------------------
    Condition(
        "smoking", "Current smoking", icd("F17.210"),
        rates=((15, 16), (20, 20), (28, 7), (40, 2), (60, 1)), female=0.8, male=1.2,
        min_age=15, max_age=75, chronic=False,
        review=((icd("F17.210"), 1),), review_prob=0.35,
    ),
    Condition(
        "ex_smoker", "Former smoker", icd("Z87.891"),
        rates=((18, 35), (90, 35)), min_age=18, requires=("smoking",), supersedes="smoking", chronic=False,
        review=((icd("Z87.891"), 1),), review_prob=0.2, dx_codes=((atc("N07BA03"), 0.3), (atc("N07BA01"), 0.3)),
    ),
    Condition(
        "obesity", "Obesity", icd("E66.9"),
        rates=((20, 35), (35, 12), (50, 6), (70, 2)), min_age=20, chronic=False,
        review=((icd("E66.9"), 1),), review_prob=0.35,
    ),
    Condition(
        "prediabetes", "Prediabetes", icd("R73.03"),
        rates=((25, 1.5), (45, 5), (65, 7), (85, 5)), min_age=25, chronic=False,
        risks={"obesity": 2.5, "gdm": 3.0, "hypertension": 1.3},
        review=((icd("R73.03"), 1),), review_prob=0.3, labs=((loinc("4548-4"), 0.5), (loinc("1558-6"), 0.2)),
    ),
    # --- cardiometabolic -----------------------------------------------------------------------------
    Condition(
        "hypertension", "Hypertension", icd("I10"),
        rates=((18, 5), (30, 8), (45, 12), (60, 20), (75, 18), (90, 15)), male=1.1, min_age=18,
        risks={"obesity": 2.0, "t2d": 1.5, "ckd": 1.5, "ght": 2.0, "prediabetes": 1.3},
        review=((icd("I10"), 1),), review_prob=0.5,
        lines=(((atc("C09AA05"), 3), (atc("C09AA03"), 2), (atc("C09CA01"), 2), (atc("C08CA01"), 3)),
               ((atc("C08CA01"), 4), (atc("C03AA03"), 3), (atc("C03BA11"), 3)),
               ((atc("C07AB07"), 5), (atc("C03DA01"), 5))),
        escalation_years=5.0,
        labs=_RENAL + ((loinc("8480-6"), 0.6), (loinc("8462-4"), 0.6)),
    ),
    Condition(
        "hyperlipidaemia", "Hyperlipidaemia", icd("E78.5"),
        rates=((20, 5), (35, 10), (50, 16), (65, 14), (80, 6)), min_age=20,
        risks={"t2d": 1.5, "obesity": 1.5, "hypertension": 1.3},
        review=((icd("E78.5"), 3), (icd("E78.00"), 1)), review_prob=0.4,
        lines=(((atc("C10AA05"), 5), (atc("C10AA01"), 2.5), (atc("C10AA07"), 2.5)), ((atc("C10AX09"), 1),)),
        escalation_years=7.0, labs=_LIPIDS + ((loinc("1742-6"), 0.1),),
    ),
    Condition(
        "t2d", "Type 2 diabetes", icd("E11.9"),
        rates=((25, 1.5), (40, 2.5), (55, 3), (70, 2), (90, 1.5)), male=1.2, min_age=25,
        risks={"obesity": 3.0, "prediabetes": 5.0, "gdm": 4.0, "hypertension": 1.5, "hyperlipidaemia": 1.3},
        review=((icd("E11.9"), 3), (icd("E11.65"), 1)), review_prob=0.7,
        lines=(((atc("A10BA02"), 1),),
               ((atc("A10BB09"), 3), (atc("A10BH01"), 3), (atc("A10BK03"), 2), (atc("A10BJ06"), 2)),
               ((atc("A10AE04"), 1),)),
        escalation_years=4.0,
        labs=((loinc("4548-4"), 0.7), (loinc("2345-7"), 0.3), (loinc("14959-1"), 0.25)) + _RENAL[:2],
    ),
    Condition(
        "dm_neuropathy", "Diabetic neuropathy", icd("E11.40"),
        rates=((25, 12), (90, 12)), min_age=25, requires=("t2d",),
        review=((icd("E11.40"), 1),), review_prob=0.4,
        lines=(((atc("N03AX12"), 5), (atc("N03AX16"), 3), (atc("N06AA09"), 2)),),
    ),
    Condition(
        "dm_retinopathy", "Diabetic retinopathy", icd("E11.319"),
        rates=((25, 10), (90, 10)), min_age=25, requires=("t2d",),
        review=((icd("E11.319"), 1),), review_prob=0.3,
    ),
    Condition(
        "ckd", "Chronic kidney disease (stage 3+)", icd("N18.30"),
        rates=((30, 0.3), (50, 1), (65, 3.5), (80, 10), (95, 14)), min_age=30,
        risks={"t2d": 2.5, "hypertension": 2.0, "hf": 1.5, "obesity": 1.3, "cad": 1.3},
        review=((icd("N18.30"), 3), (icd("N18.31"), 1), (icd("N18.32"), 1)), review_prob=0.5,
        lines=(((atc("C09AA05"), 6), (atc("C09CA01"), 4)),), escalation_years=6.0,
        labs=_RENAL + ((loinc("9318-7"), 0.3), (loinc("718-7"), 0.2)),
    ),
    Condition(
        "ckd4", "Chronic kidney disease stage 4", icd("N18.4"),
        rates=((30, 25), (95, 25)), min_age=30, requires=("ckd",), supersedes="ckd",
        risks={"t2d": 1.5, "hf": 1.5},
        review=((icd("N18.4"), 1),), review_prob=0.7,
        lines=(((atc("A11CC03"), 1),), ((atc("B03XA01"), 1),)), escalation_years=2.0,
        labs=_RENAL + ((loinc("2777-1"), 0.4), (loinc("718-7"), 0.4)),
    ),
    Condition(
        "ckd5", "Chronic kidney disease stage 5", icd("N18.5"),
        rates=((30, 90), (95, 90)), min_age=30, requires=("ckd4",), supersedes="ckd4",
        review=((icd("N18.5"), 2), (icd("Z99.2"), 1)), review_prob=0.8,
        lines=(((atc("V03AE02"), 1),), ((atc("B03XA01"), 1),)), escalation_years=1.0,
        labs=_RENAL + ((loinc("2777-1"), 0.6), (loinc("718-7"), 0.5)),
    ),
    Condition(
        "cad", "Coronary artery disease", icd("I25.10"),
        rates=((35, 0.3), (50, 1.2), (65, 2.5), (80, 6), (95, 6)), female=0.75, male=1.3, min_age=30,
        risks={"smoking": 2.0, "hypertension": 1.8, "t2d": 2.0, "hyperlipidaemia": 1.8, "ckd": 1.4,
               "obesity": 1.3},
        review=((icd("I25.10"), 1),), review_prob=0.5,
        lines=(((atc("B01AC06"), 8), (atc("B01AC04"), 2)), ((atc("C10AA05"), 1),),
               ((atc("C07AB07"), 5), (atc("C01DA02"), 5))),
        escalation_years=2.0, labs=_LIPIDS,
    ),
    Condition(
        "mi", "Myocardial infarction", icd("I21.9"),
        rates=((35, 0.1), (50, 0.4), (65, 0.9), (80, 1.5), (95, 2)), female=0.75, male=1.3, min_age=30,
        risks={"cad": 3.0, "smoking": 2.0, "t2d": 1.8, "hypertension": 1.5, "hyperlipidaemia": 1.5},
        acute=True, implies=("cad",), history=icd("I25.2"), chronic=False,
        review=((icd("I25.2"), 1),), review_prob=0.3,
        acute_codes=((loinc("10839-9"), 1.0), (loinc("6598-7"), 0.3), (atc("B01AC06"), 0.9),
                     (atc("B01AC24"), 0.6), (atc("C10AA05"), 0.7)),
    ),
    Condition(
        "cardiomegaly", "Cardiomegaly / LV hypertrophy (stage B heart failure)", icd("I51.7"),
        rates=((45, 0.3), (60, 1.2), (70, 3), (80, 6), (90, 8)), male=1.3, min_age=40,
        risks={"hypertension": 2.5, "mi": 4.0, "af": 2.0, "obesity": 1.5, "ckd": 1.5, "aortic_stenosis": 3.0},
        review=((icd("I51.7"), 1),), review_prob=0.3, labs=((loinc("33762-6"), 0.3),),
    ),
    Condition(
        "aortic_stenosis", "Aortic stenosis", icd("I35.0"),
        rates=((55, 0.2), (65, 0.8), (75, 2.5), (85, 5)), male=1.2, min_age=50,
        risks={"hypertension": 1.3, "hyperlipidaemia": 1.3, "ckd": 1.5},
        review=((icd("I35.0"), 1),), review_prob=0.3,
        dx_codes=((icd("R01.1"), 0.5),),
    ),
    Condition(
        "hf", "Heart failure", icd("I50.9"),
        rates=((40, 0.04), (50, 0.1), (60, 0.26), (70, 0.65), (80, 1.6), (90, 3.2)), male=1.3, min_age=30,
        enrichment=3.0,
        risks={"cardiomegaly": 6.0, "aortic_stenosis": 3.0, "hypertension": 2.0, "t2d": 2.2, "cad": 2.2,
               "mi": 3.5, "af": 4.0, "ckd": 2.5, "ckd4": 1.5, "obesity": 1.6, "copd": 1.5, "smoking": 1.3},
        acute=True,
        review=((icd("I50.22"), 2), (icd("I50.32"), 2), (icd("I50.9"), 2)), review_prob=0.7,
        lines=(((atc("C03CA01"), 1),), ((atc("C07AB07"), 7), (atc("C07AG02"), 3)),
               ((atc("C09AA05"), 5), (atc("C09DX04"), 5)), ((atc("C03DA01"), 6), (atc("A10BK01"), 4))),
        escalation_years=1.0,
        labs=((loinc("33762-6"), 0.5),) + _RENAL,
        acute_codes=((loinc("33762-6"), 0.9), (loinc("30934-4"), 0.2), (loinc("10839-9"), 0.4),
                     (atc("C03CA01"), 0.9)),
    ),
    Condition(
        "af", "Atrial fibrillation", icd("I48.91"),
        rates=((40, 0.1), (55, 0.4), (65, 1.2), (75, 3), (85, 5)), male=1.5, min_age=30,
        risks={"hypertension": 1.6, "hf": 2.5, "obesity": 1.5, "cad": 1.4, "t2d": 1.2, "copd": 1.3},
        review=((icd("I48.91"), 2), (icd("I48.20"), 1)), review_prob=0.6,
        lines=(((atc("B01AF02"), 45), (atc("B01AF01"), 30), (atc("B01AA03"), 15), (atc("B01AE07"), 10)),
               ((atc("C07AB07"), 6), (atc("C08DB01"), 2), (atc("C01AA05"), 2)), ((atc("C01BD01"), 1),)),
        escalation_years=2.0,
        labs=((loinc("6301-6"), 0.2), (loinc("2160-0"), 0.3), (loinc("3016-3"), 0.15)),
    ),
    Condition(
        "stroke", "Ischaemic stroke", icd("I63.9"),
        rates=((40, 0.2), (60, 0.8), (70, 1.8), (80, 4), (90, 7)), min_age=30,
        risks={"af": 3.5, "hypertension": 2.0, "t2d": 1.6, "smoking": 1.8, "cad": 1.4, "hyperlipidaemia": 1.3},
        acute=True, history=icd("Z86.73"),
        review=((icd("Z86.73"), 3), (icd("I69.398"), 1)), review_prob=0.4,
        lines=(((atc("B01AC04"), 7), (atc("B01AC06"), 3)), ((atc("C10AA05"), 1),)), escalation_years=0.5,
        acute_codes=((loinc("2345-7"), 0.6), (loinc("6301-6"), 0.4), (atc("B01AC06"), 0.8)),
    ),
    # --- respiratory -----------------------------------------------------------------------------------
    Condition(
        "copd", "COPD", icd("J44.9"),
        rates=((35, 0.5), (50, 1.5), (65, 2.2), (85, 2)), min_age=35,
        risks={"smoking": 9.0, "asthma": 3.0},
        review=((icd("J44.9"), 1),), review_prob=0.6,
        lines=(((atc("R03AC02"), 1),), ((atc("R03BB04"), 6), (atc("R03AL03"), 4)),
               ((atc("R03AL08"), 5), (atc("R03AK06"), 5))),
        escalation_years=3.0, labs=((loinc("20150-9"), 0.15), (loinc("19926-5"), 0.15)),
        flare=(0.12, ((icd("J44.1"), 1.0), (atc("H02AB06"), 0.8), (atc("J01AA02"), 0.5))),
    ),
    Condition(
        "asthma", "Asthma", icd("J45.909"),
        rates=((1, 8), (5, 9), (10, 4), (15, 2.5), (25, 1.2), (50, 0.4), (80, 0.3)), min_age=1,
        risks={"obesity": 1.5, "smoking": 1.3, "atopic_dermatitis": 2.0},
        review=((icd("J45.909"), 1),), review_prob=0.5,
        lines=(((atc("R03AC02"), 1),), ((atc("R03BA02"), 5), (atc("R03BA05"), 5)),
               ((atc("R03AK06"), 5), (atc("R03DC03"), 5))),
        escalation_years=3.0,
        flare=(0.08, ((icd("J45.901"), 1.0), (atc("H02AB06"), 0.7))),
    ),
    # --- mental health and neurology ------------------------------------------------------------------
    Condition(
        "depression", "Depression", icd("F32.9"),
        rates=((12, 6), (18, 12), (30, 7), (45, 1.8), (65, 1.0), (85, 1.5)), female=1.5, male=0.8, min_age=12,
        risks={"anxiety": 2.0, "stroke": 1.5, "hf": 1.3, "cad": 1.2, "copd": 1.3, "t2d": 1.2,
               "dementia": 1.3},
        review=((icd("F32.9"), 2), (icd("F33.1"), 1)), review_prob=0.5,
        lines=(((atc("N06AB06"), 4), (atc("N06AB10"), 3), (atc("N06AB04"), 2), (atc("N06AB03"), 1)),
               ((atc("N06AX11"), 5), (atc("N06AX16"), 5))),
        escalation_years=2.0,
    ),
    Condition(
        "anxiety", "Generalised anxiety disorder", icd("F41.1"),
        rates=((10, 2), (20, 6), (40, 4), (70, 2)), female=1.6, male=0.8, min_age=10,
        risks={"depression": 2.0},
        review=((icd("F41.1"), 1),), review_prob=0.4,
        lines=(((atc("N06AB06"), 5), (atc("N06AB10"), 5)), ((atc("N06AX16"), 1),)), escalation_years=3.0,
    ),
    Condition(
        "dementia", "Dementia", icd("F03.90"),
        rates=((60, 0.3), (70, 2), (80, 12), (90, 30)), min_age=60,
        risks={"stroke": 2.0, "t2d": 1.5, "hypertension": 1.2, "depression": 1.5},
        review=((icd("F03.90"), 1),), review_prob=0.6,
        lines=(((atc("N06DA02"), 1),), ((atc("N06DX01"), 1),)), escalation_years=2.5,
        labs=((loinc("2132-9"), 0.15), (loinc("3016-3"), 0.15)),
    ),
    Condition(
        "parkinsons", "Parkinson's disease", icd("G20.A1"),
        rates=((50, 0.15), (70, 1.2), (85, 2.5)), male=1.5, min_age=50,
        review=((icd("G20.A1"), 1),), review_prob=0.6, lines=(((atc("N04BA02"), 1),),),
    ),
    Condition(
        "migraine", "Migraine", icd("G43.909"),
        rates=((10, 1.5), (20, 4), (35, 3.5), (50, 1.2), (60, 0.4)), female=2.5, male=0.8,
        min_age=10, max_age=70,
        review=((icd("G43.909"), 1),), review_prob=0.3, lines=(((atc("N02CC01"), 1),),),
    ),
    Condition(
        "adhd", "ADHD", icd("F90.9"),
        rates=((5, 8), (8, 10), (12, 5), (17, 2)), female=0.5, male=1.5, min_age=4, max_age=18,
        review=((icd("F90.9"), 1),), review_prob=0.4,
        lines=(((atc("N06BA04"), 8), (atc("N06BA09"), 2)),),
    ),
    # --- musculoskeletal, endocrine, digestive, skin --------------------------------------------------
    Condition(
        "osteoarthritis", "Osteoarthritis", icd("M17.9"),
        rates=((40, 3), (55, 8), (70, 10), (85, 8)), female=1.3, male=0.8, min_age=35,
        risks={"obesity": 2.0},
        review=((icd("M17.9"), 3), (icd("M16.9"), 1), (icd("M19.90"), 1)), review_prob=0.4,
        lines=(((atc("N02BE01"), 6), (atc("M01AE01"), 4)),
               ((atc("M01AE02"), 4), (atc("M02AA15"), 3), (atc("N02AX02"), 3))),
        escalation_years=3.0,
    ),
    Condition(
        "knee_replacement", "Knee replacement", icd("Z96.651"),
        rates=((50, 12), (90, 12)), min_age=50, requires=("osteoarthritis",), chronic=False,
        review=((icd("Z96.651"), 1),), review_prob=0.2,
    ),
    Condition(
        "osteoporosis", "Osteoporosis", icd("M81.0"),
        rates=((50, 8), (65, 14), (80, 12)), male=0.2, min_age=50,
        risks={"smoking": 1.5, "copd": 1.3},
        review=((icd("M81.0"), 1),), review_prob=0.4,
        lines=(((atc("M05BA04"), 1),), ((atc("A11CC05"), 1),)), escalation_years=2.0,
    ),
    Condition(
        "hypothyroidism", "Hypothyroidism", icd("E03.9"),
        rates=((10, 0.3), (30, 2), (50, 3), (70, 3)), female=1.6, male=0.3,
        review=((icd("E03.9"), 1),), review_prob=0.4, lines=(((atc("H03AA01"), 1),),),
        labs=((loinc("3016-3"), 0.6), (loinc("3024-7"), 0.2)),
    ),
    Condition(
        "gout", "Gout", icd("M10.9"),
        rates=((25, 0.4), (45, 1.5), (65, 2.5)), female=0.4, male=1.8, min_age=25,
        risks={"ckd": 2.0, "obesity": 2.0, "hypertension": 1.5},
        review=((icd("M10.9"), 1),), review_prob=0.3,
        lines=(((atc("M04AA01"), 1),),), labs=((loinc("3084-1"), 0.4),),
    ),
    Condition(
        "gerd", "Gastro-oesophageal reflux", icd("K21.9"),
        rates=((15, 2), (30, 4), (50, 6), (70, 6)), min_age=15,
        risks={"obesity": 1.8, "smoking": 1.3},
        review=((icd("K21.9"), 1),), review_prob=0.3,
        lines=(((atc("A02BC01"), 6), (atc("A02BC05"), 2), (atc("A02BC02"), 2)),),
    ),
    Condition(
        "atopic_dermatitis", "Atopic dermatitis", icd("L20.9"),
        rates=((0, 25), (2, 12), (5, 5), (12, 2), (20, 0.8)),
        review=((icd("L20.9"), 1),), review_prob=0.3,
        lines=(((atc("D07AA02"), 1),), ((atc("D07AC01"), 1),)), escalation_years=3.0,
    ),
    # --- sex-specific ------------------------------------------------------------------------------------
    Condition(
        "bph", "Benign prostatic hyperplasia", icd("N40.1"),
        rates=((45, 3), (55, 10), (65, 20), (75, 25)), female=0.0, min_age=45,
        review=((icd("N40.1"), 1),), review_prob=0.4,
        lines=(((atc("G04CA02"), 1),), ((atc("G04CB01"), 1),)), escalation_years=3.0,
        labs=((loinc("2857-1"), 0.3),),
    ),
    Condition(
        "prostate_cancer", "Prostate cancer", icd("C61"),
        rates=((50, 0.5), (60, 2.5), (70, 5), (80, 6)), female=0.0, min_age=50,
        review=((icd("C61"), 1),), review_prob=0.6,
        lines=(((atc("L02AE02"), 6), (atc("L02BB03"), 4)),), labs=((loinc("2857-1"), 0.8),),
    ),
    Condition(
        "breast_cancer", "Breast cancer", icd("C50.919"),
        rates=((30, 0.3), (45, 1.5), (60, 2.5), (75, 3.5)), male=0.0, min_age=30,
        review=((icd("C50.919"), 1),), review_prob=0.6,
        lines=(((atc("L02BA01"), 4), (atc("L02BG03"), 3), (atc("L02BG04"), 3)),),
    ),
    # --- recorded by the pregnancy module ---------------------------------------------------------------
    Condition("gdm", "Gestational diabetes", icd("O24.419"), male=0.0, hazard=False, chronic=False),
    Condition("ght", "Gestational hypertension", icd("O13.3"), male=0.0, hazard=False, chronic=False),
    # --- falls: the second task's event -------------------------------------------------------------
    Condition(
        "fall", "Fall with injury", icd("W19.XXXA"),
        rates=((40, 4), (60, 10), (70, 20), (80, 40), (90, 70)), female=1.3, min_age=40,
        risks={"fall": 2.0, "dementia": 2.2, "parkinsons": 2.5, "stroke": 1.8, "osteoporosis": 1.3,
               "depression": 1.5, "osteoarthritis": 1.4, "t2d": 1.2, "af": 1.2, "hf": 1.3},
        acute=True, recurrent=True, chronic=False,
        review=((icd("Z91.81"), 1),), review_prob=0.3,
        acute_codes=((atc("N02BE01"), 0.6),),
    ),
)

CONDITION_BY_NAME = {c.name: c for c in CONDITIONS}

# Injuries written at a fall visit next to W19.XXXA: (code, weight, weight if osteoporosis recorded).
FALL_INJURIES = (
    (icd("S72.001A"), 1.0, 4.0), (icd("S72.002A"), 1.0, 4.0),
    (icd("S52.501A"), 2.0, 4.0), (icd("S52.502A"), 2.0, 4.0),
    (icd("S00.83XA"), 3.0, 2.0), (icd("S09.90XA"), 2.0, 2.0),
    (icd("S80.01XA"), 3.0, 2.0), (icd("S80.02XA"), 3.0, 2.0),
    (icd("S22.31XA"), 1.0, 2.0), (icd("S32.009A"), 0.5, 2.0),
)

# --- exacerbations of chronic airway disease: the third task's event ------------------------------------
# A self-exciting process (see `exacerbations`), drawn from its own random stream so that it changes
# nothing else in a record. It starts at the first visit that records asthma or COPD (COPD's rates if
# COPD is recorded there) and writes an urgent-care encounter (emergency department, out of hours or
# admission) at each exacerbation; nothing else happens at that encounter. Its hazard at age ``s`` is
#   RATE[kind] * g * (1 + FREQUENT * n_365(s) + RECENCY * exp(-(s - t_last) / DECAY_YEARS))
# with n_365(s) the exacerbations in the 365 days before ``s``, t_last the latest one (no RECENCY term
# before the first), and g the order factor: STEPPED when maintenance treatment was stepped up at the latest exacerbation (treated in
# response), UNCONTROLLED when it was stepped up at an earlier one but not at the latest (exacerbating
# on escalated treatment), 1 when it was never stepped up. Sources: the card.
EXACERBATION_EVENT = "exacerbation"
EXACERBATION_KINDS = ("copd", "asthma")  # conditions that start the process (the first listed wins)
EXACERBATION_RATE = {"copd": 0.25, "asthma": 0.1}  # per person-year, no exacerbation in the record
EXACERBATION_FREQUENT = 0.1  # relative increase per exacerbation in the previous 365 days
EXACERBATION_RECENCY = 6.0  # excess relative hazard just after an exacerbation
EXACERBATION_DECAY_YEARS = 0.75  # e-folding time of that excess (9 months)
EXACERBATION_STEPPED = 0.4
EXACERBATION_UNCONTROLLED = 3.0
P_STEP_UP = 0.5  # chance that maintenance treatment is stepped up at an exacerbation (below the top step)
# Written at every exacerbation encounter (pulse oximetry: NICE NG115, BTS), and nowhere else: it
# is how the oracle finds the encounters in a record.
EXACERBATION_MARKER = loinc("59408-5")
EXACERBATION_CODES = {  # (code, probability) at the encounter, besides the marker
    "copd": ((icd("J44.1"), 1.0), (atc("H02AB06"), 0.9), (atc("J01AA02"), 0.5), (atc("R03AC02"), 0.4)),
    "asthma": ((icd("J45.901"), 1.0), (atc("H02AB06"), 0.9), (atc("R03AC02"), 0.6)),
}
STEP_UP_CODES = {  # the maintenance drug added at step-up k (GOLD 2023; BTS/SIGN 2019)
    "copd": (atc("R03AL03"), atc("R03AL08"), atc("R03DX07")),
    "asthma": (atc("R03AK06"), atc("R03DC03"), atc("R03BB04")),
}

# --- prediction tasks ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskSpec:
    """A binary task: does ``event`` happen within 365 days after the index visit?

    The index visit is the first visit on or after a date drawn uniformly over the last
    ``INDEX_SPAN_YEARS`` of the follow-up that leaves 365 days, at which the patient is eligible: ``min_age`` reached, ``event``
    not recorded yet (when ``exclude_recorded``), at least ``min_any_of`` of ``any_of`` recorded, and
    at least ``min_exacerbations`` exacerbation encounters in the record. ``event`` is a condition name or ``EXACERBATION_EVENT``. Index visits are practice visits, never
    exacerbation encounters, and an exacerbation task draws its index date from the exacerbation
    stream, so adding it left the other tasks' index visits, labels and oracles as they were.
    """

    name: str
    event: str
    description: str
    min_age: float
    any_of: tuple = ()
    min_any_of: int = 1
    exclude_recorded: bool = True
    min_exacerbations: int = 0


INDEX_SPAN_YEARS = 3.0  # index dates are drawn over the last 3 years of usable follow-up
TASK_SPECS = (
    TaskSpec(
        "heart_failure_1y", "hf",
        "First heart-failure diagnosis within 365 days after the index visit; adults 60+ at risk "
        "(ACC/AHA stage A/B: at least two of hypertension, type 2 diabetes, coronary disease, previous "
        "MI, atrial fibrillation, CKD, cardiomegaly / LV hypertrophy, aortic stenosis) and no heart "
        "failure at the index visit.",
        min_age=60.0, min_any_of=2,
        any_of=("hypertension", "t2d", "cad", "mi", "af", "ckd", "cardiomegaly", "aortic_stenosis"),
    ),
    TaskSpec(
        "fall_1y", "fall",
        "A fall with injury (W19.XXXA) within 365 days after the index visit; adults 65+ (previous "
        "falls allowed: a recorded fall is a risk factor).",
        min_age=65.0, exclude_recorded=False,
    ),
    TaskSpec(
        "exacerbation_1y", EXACERBATION_EVENT,
        "An asthma or COPD exacerbation treated at an urgent-care encounter (pulse oximetry LOINC 59408-5 "
        "with J44.1 / J45.901) within 365 days after the index visit; patients 5+ with asthma or COPD "
        "recorded and at least one such exacerbation before (secondary prevention: when it happened, "
        "and whether treatment was stepped up at it or before it, set the risk).",
        min_age=5.0, any_of=EXACERBATION_KINDS, exclude_recorded=False, min_exacerbations=1,
    ),
)
TASKS = tuple(t.name for t in TASK_SPECS)

# --- demographics and visits ---------------------------------------------------------------------------
P_FEMALE = 0.51
# entry (registration) age: (probability, low, high) in years; "born into the practice" first
ENTRY_AGE_MIXTURE = ((0.07, 0.0, 0.0), (0.16, 0.1, 18.0), (0.27, 18.0, 50.0), (0.50, 50.0, 92.0))
ENTRY_YEARS = (2005.0, 2021.0)  # calendar range of registration dates
STUDY_END = 2025.0  # follow-up never runs past 31 Dec 2024
FOLLOW_UP_YEARS = (1.0, 16.0)  # uniform length of follow-up (before the study end / age cap)
FOLLOW_UP_SCALE_65PLUS = 0.5  # older registrants are followed for shorter (deaths, moves)
MAX_FOLLOW_UP_AGE = 100.0

# Survivor selection at registration: a patient registering at age A must have survived to A, so
# a simulated pre-registration history is kept with probability
#   exp(-integral_0^A mu(a) * (HR_death(conditions present at a) - 1) da)
# (its survival relative to a disease-free person; a rejection sampler of P(history | alive at A)).
# mu is a Gompertz all-cause mortality, exp(MORTALITY_LOG_RATE + MORTALITY_SLOPE * age), close to
# the US life table (~0.4%/year at 50, ~6% at 80, ~15% at 90; Arias & Xu, NVSR 2022).
MORTALITY_LOG_RATE, MORTALITY_SLOPE = -10.0, 0.09
MORTALITY_HR = {
    "hf": 3.0, "aortic_stenosis": 1.5, "cardiomegaly": 1.3, "ckd": 1.8, "ckd4": 1.6, "ckd5": 2.5, "copd": 1.6, "dementia": 2.0, "stroke": 2.0,
    "mi": 1.8, "t2d": 1.6, "af": 1.5, "cad": 1.5, "smoking": 1.4, "obesity": 1.2, "parkinsons": 2.0,
    "prostate_cancer": 1.5, "breast_cancer": 1.8,
}
MAX_SURVIVAL_DRAWS = 100

# Routine visits: a renewal process with Gamma(2) gaps; rate (visits/year) by age, times
# (1 + BURDEN_EFFECT * chronic conditions recorded).
VISIT_RATE_BY_AGE = ((0, 6.0), (2, 3.0), (5, 1.8), (18, 1.8), (45, 2.5), (65, 3.5), (80, 4.5))
VISIT_RATE_FEMALE = 1.2  # women consult more (18-65)
BURDEN_EFFECT = 0.25
MAX_BURDEN = 8

# --- routine care --------------------------------------------------------------------------------
# Pools of minor acute problems: (code, weight F, weight M, ((extra code, probability), ...)).
# Age / sex eligibility of every code comes from RESTRICTIONS below.
_ABX = atc("J01CA04")
POOLS = {
    "respiratory": (
        (icd("J06.9"), 40, 40, ((atc("N02BE01"), 0.3),)),
        (icd("J02.9"), 12, 12, ((atc("J01CE02"), 0.3),)),
        (icd("J20.9"), 10, 10, ((_ABX, 0.2),)),
        (icd("J01.90"), 8, 7, ((_ABX, 0.4),)),
        (icd("R05.9"), 8, 8, ()),
        (icd("B34.9"), 8, 8, ()),
        (icd("J03.90"), 6, 6, ((atc("J01CE02"), 0.6),)),
        (icd("J11.1"), 6, 6, ((atc("J05AH02"), 0.2),)),
        (icd("H66.90"), 15, 15, ((_ABX, 0.6),)),
        (icd("J21.9"), 10, 10, ()),
        (icd("J05.0"), 4, 5, ((atc("H02AB02"), 0.7),)),
        (icd("J18.9"), 3, 3, ((_ABX, 0.5), (atc("J01FA10"), 0.3), (loinc("1988-5"), 0.3), (loinc("6690-2"), 0.3))),
        (icd("J30.2"), 5, 5, ((atc("R06AE07"), 0.6),)),
        (icd("J10.1"), 2, 2, ((atc("J05AH02"), 0.5),)),
        (icd("U07.1"), 8, 8, ((loinc("94500-6"), 0.8),)),
        (icd("Z20.822"), 3, 3, ((loinc("94500-6"), 0.9),)),
    ),
    "eye_ear": (
        (icd("H10.9"), 10, 10, ((atc("S01AA01"), 0.6),)),
        (icd("H61.21"), 4, 4, ()),
        (icd("H65.90"), 3, 3, ()),
        (icd("J32.9"), 3, 3, ((atc("R01AD09"), 0.4),)),
        (icd("H52.4"), 3, 3, ()),
        (icd("H52.13"), 3, 3, ()),
        (icd("H25.9"), 4, 4, ()),
        (icd("H40.9"), 2, 2, ((atc("S01EE01"), 0.7),)),
        (icd("H91.90"), 3, 3, ()),
        (icd("H81.10"), 2, 1, ()),
    ),
    "digestive": (
        (icd("A09"), 12, 12, ((atc("A07DA03"), 0.1),)),
        (icd("R10.9"), 8, 6, ()),
        (icd("K59.00"), 8, 6, ((atc("A06AD65"), 0.5), (atc("A06AD11"), 0.2))),
        (icd("K52.9"), 4, 4, ()),
        (icd("R11.2"), 4, 4, ((atc("A04AA01"), 0.3),)),
        (icd("K58.9"), 4, 2, ()),
        (icd("K29.70"), 3, 3, ((atc("A02BC01"), 0.5),)),
        (icd("K64.9"), 3, 3, ()),
        (icd("R19.7"), 3, 3, ((atc("A07DA03"), 0.3),)),
        (icd("K57.30"), 2, 2, ()),
        (icd("K80.20"), 2, 1, ((loinc("1742-6"), 0.5),)),
        (icd("K40.90"), 0.5, 2.5, ()),
        (icd("K35.80"), 1, 1, ((loinc("6690-2"), 0.8), (loinc("1988-5"), 0.5))),
    ),
    "skin": (
        (icd("L30.9"), 6, 6, ((atc("D07AA02"), 0.5),)),
        (icd("L03.90"), 5, 5, ((atc("J01CF05"), 0.6), (atc("J01DB01"), 0.3))),
        (icd("L70.0"), 8, 8, ((atc("D10AF01"), 0.4), (atc("D10AD01"), 0.3), (atc("D10BA01"), 0.05))),
        (icd("L22"), 6, 6, ()),
        (icd("L21.9"), 3, 3, ()),
        (icd("B35.3"), 2, 4, ((atc("D01AC01"), 0.6),)),
        (icd("B35.1"), 2, 2, ((atc("D01BA02"), 0.3),)),
        (icd("L50.9"), 3, 3, ((atc("R06AE07"), 0.6),)),
        (icd("L02.91"), 2, 2, ((atc("J01CF05"), 0.5),)),
        (icd("L60.0"), 2, 2, ()),
        (icd("B00.9"), 2, 2, ((atc("J05AB01"), 0.4),)),
        (icd("B02.9"), 2, 2, ((atc("J05AB11"), 0.6),)),
        (icd("B01.9"), 3, 3, ()),
        (icd("B08.4"), 3, 3, ()),
        (icd("L01.00"), 3, 3, ((atc("D06AX01"), 0.6),)),
        (icd("L40.0"), 1.5, 1.5, ((atc("D07AC01"), 0.5),)),
        (icd("B36.0"), 1, 1, ()),
    ),
    "musculoskeletal": (
        (icd("M54.50"), 20, 20, ((atc("N02BE01"), 0.4), (atc("M01AE01"), 0.4))),
        (icd("M54.2"), 8, 6, ((atc("M01AE01"), 0.3),)),
        (icd("M25.561"), 6, 6, ()),
        (icd("M25.511"), 5, 5, ()),
        (icd("R51.9"), 6, 5, ((atc("N02BE01"), 0.4),)),
        (icd("G44.209"), 5, 4, ((atc("N02BE01"), 0.5),)),
        (icd("M79.10"), 4, 3, ()),
        (icd("M72.2"), 3, 3, ()),
        (icd("M75.100"), 2, 2, ()),
        (icd("M77.10"), 2, 2, ()),
    ),
    "injury": (
        (icd("S93.401A"), 10, 10, ()),
        (icd("S61.419A"), 4, 7, ()),
        (icd("S01.81XA"), 3, 5, ()),
        (icd("S83.91XA"), 3, 3, ()),
        (icd("S62.609A"), 2, 4, ()),
        (icd("T14.90XA"), 3, 3, ()),
        (icd("W57.XXXA"), 3, 3, ()),
        (icd("T78.40XA"), 3, 3, ((atc("R06AE07"), 0.5),)),
        (icd("S39.012A"), 3, 3, ((atc("M01AE01"), 0.4),)),
        (icd("S06.0X0A"), 1.5, 2.5, ()),
        (icd("S42.001A"), 1, 2, ()),
        (icd("S43.401A"), 1.5, 2, ()),
        (icd("S13.4XXA"), 2, 2, ()),
        (icd("T23.001A"), 1, 1.5, ()),
        (icd("S92.901A"), 1.5, 1.5, ()),
    ),
    "genitourinary": (
        (icd("N39.0"), 20, 5, ((atc("J01XE01"), 0.5), (atc("J01EA01"), 0.3), (loinc("630-4"), 0.4))),
        (icd("N30.00"), 6, 1, ((atc("J01XE01"), 0.6),)),
        (icd("R31.9"), 1, 2, ()),
        (icd("N76.0"), 4, 0, ()),
        (icd("B37.31"), 4, 0, ((atc("J02AC01"), 0.5),)),
        (icd("N94.6"), 4, 0, ((atc("M01AE01"), 0.6),)),
        (icd("N92.0"), 3, 0, ((loinc("718-7"), 0.5),)),
        (icd("N41.0"), 0, 1.5, ((atc("J01MA02"), 0.7),)),
        (icd("N45.1"), 0, 1, ((atc("J01MA02"), 0.5),)),
    ),
    "mental": (
        (icd("F41.9"), 6, 4, ()),
        (icd("F51.01"), 4, 3, ((atc("N05CF01"), 0.4),)),
        (icd("G47.00"), 3, 3, ((atc("N05CF01"), 0.3),)),
        (icd("F43.21"), 3, 2, ()),
        (icd("F10.10"), 0.7, 2, ()),
        (icd("F10.20"), 0.4, 1.2, ()),
        (icd("F43.10"), 1, 0.6, ()),
    ),
    "general": (
        (icd("R50.9"), 6, 6, ()),
        (icd("R53.83"), 6, 4, ((loinc("58410-2"), 0.5), (loinc("3016-3"), 0.3), (loinc("2276-4"), 0.2))),
        (icd("R42"), 4, 3, ()),
        (icd("R07.9"), 3, 4, ((loinc("10839-9"), 0.2),)),
        (icd("R21"), 4, 4, ()),
        (icd("E55.9"), 3, 2, ((atc("A11CC05"), 0.8),)),
        (icd("D50.9"), 3, 1, ((atc("B03AA07"), 0.8), (loinc("2276-4"), 0.7))),
        (icd("D64.9"), 2, 1.5, ((loinc("718-7"), 0.8),)),
        (icd("R00.2"), 2, 2, ()),
        (icd("R06.02"), 1.5, 1.5, ()),
        (icd("R55"), 1.5, 1.5, ()),
        (icd("R60.0"), 1.5, 1, ()),
        (icd("R63.4"), 1, 1, ()),
        (icd("E86.0"), 1, 1, ()),
        (icd("R56.00"), 1, 1.3, ()),
        (icd("Z76.0"), 3, 3, ()),
        (icd("Z71.3"), 2, 1.5, ()),
        (icd("Z02.0"), 2, 2, ()),
    ),
    "womens_health": (
        (icd("Z30.011"), 6, 0, ((atc("G03AA07"), 0.8),)),
        (icd("Z30.41"), 6, 0, ((atc("G03AA07"), 0.9),)),
        (icd("Z30.430"), 2, 0, ((atc("G02BA03"), 0.9),)),
        (icd("Z01.419"), 4, 0, ()),
        (icd("N95.1"), 4, 0, ((atc("G03CA03"), 0.5),)),
        (icd("E28.2"), 1, 0, ()),
        (icd("N80.9"), 1, 0, ()),
    ),
}

# Probability weight of each pool by age band (upper bounds, years), sex-independent. The
# respiratory pool also follows the season (winter peak).
POOL_WEIGHTS_BY_AGE = (
    # age <, respiratory, eye_ear, digestive, skin, musculoskeletal, injury, genitourinary, mental, general, womens
    (2, (45, 12, 14, 14, 0, 4, 1, 0, 10, 0)),
    (6, (40, 12, 12, 10, 1, 8, 2, 0, 10, 0)),
    (18, (28, 8, 10, 12, 6, 14, 3, 5, 10, 4)),
    (50, (22, 6, 10, 8, 18, 10, 8, 8, 8, 8)),
    (70, (22, 8, 10, 7, 20, 6, 7, 6, 10, 4)),
    (200, (24, 10, 10, 6, 18, 5, 8, 5, 12, 2)),
)
POOL_NAMES = ("respiratory", "eye_ear", "digestive", "skin", "musculoskeletal", "injury",
              "genitourinary", "mental", "general", "womens_health")
RESPIRATORY_SEASONALITY = 0.6  # amplitude of the (1 + a cos) winter peak, maximal mid-January
P_ACUTE_WITH_CHRONIC = 0.35
P_SECOND_PROBLEM, P_THIRD_PROBLEM = 0.5, 0.2  # problems addressed at a routine visit  # chance a routine visit of a patient with chronic disease is also acute

# --- check-ups, screening, vaccination -----------------------------------------------------------------
CHECKUP_INTERVAL_YEARS = 1.0
P_ADULT_CHECKUP = 0.35  # chance a routine visit is an annual check-up when one is due
ADULT_CHECKUP = (
    (loinc("8480-6"), 0.9), (loinc("8462-4"), 0.9), (loinc("39156-5"), 0.7), (loinc("29463-7"), 0.6),
    (loinc("8867-4"), 0.4), (loinc("72166-2"), 0.3), (loinc("58410-2"), 0.2), (loinc("24323-8"), 0.2),
)
CHILD_CHECKUP = ((loinc("8302-2"), 0.8), (loinc("29463-7"), 0.8))
# (code, sex or None, min age, max age, probability at a check-up, extra codes)
SCREENING = (
    (icd("Z12.31"), "F", 50, 75, 0.45, ()),
    (icd("Z12.4"), "F", 25, 65, 0.3, ()),
    (icd("Z12.5"), "M", 50, 70, 0.25, (loinc("2857-1"),)),
    (icd("Z12.11"), None, 50, 75, 0.08, ()),
    (icd("Z13.220"), None, 20, 90, 0.2, (loinc("24331-1"),)),
    (icd("Z13.1"), None, 35, 90, 0.15, (loinc("4548-4"),)),
)

IMMUNIZATION = icd("Z23")
# Well-child schedule: (age in years, vaccines); newborn check at 3-6 days
WELL_CHILD = (
    (1 / 12, ()),
    (2 / 12, (atc("J07CA09"), atc("J07AL02"), atc("J07BH01"))),
    (4 / 12, (atc("J07CA09"), atc("J07AL02"), atc("J07BH01"))),
    (6 / 12, (atc("J07CA09"), atc("J07AL02"))),
    (9 / 12, ()),
    (1.0, (atc("J07BD52"), atc("J07BK01"), atc("J07BC02"), atc("J07AL02"))),
    (1.5, (atc("J07BC02"),)),
    (2.0, ()), (3.0, ()),
    (4.0, (atc("J07CA02"), atc("J07BD52"), atc("J07BK01"))),
    (5.0, ()), (6.0, ()), (8.0, ()), (10.0, ()),
    (11.5, (atc("J07AJ52"), atc("J07AH08"), atc("J07BM03"))),
    (13.0, ()), (15.0, ()),
    (16.0, (atc("J07AH08"),)),
)
P_WELL_CHILD_ATTENDED = 0.85
NEWBORN_CHECK = icd("Z00.110")
CHILD_EXAM = (icd("Z00.129"), icd("Z00.121"))  # without / with abnormal findings
ADULT_EXAM = (icd("Z00.00"), icd("Z00.01"))
FLU_VACCINE = atc("J07BB02")
# adult vaccines offered at routine visits: (code, min age, max age, first calendar year,
# last calendar year, probability per visit, maximum doses, minimum years between doses)
ADULT_VACCINES = (
    (atc("J07AM51"), 18, 110, 0, 9999, 0.03, 9, 10.0),
    (atc("J07BK03"), 50, 110, 2018.0, 9999, 0.08, 2, 0.2),
    (atc("J07AL02"), 65, 110, 0, 9999, 0.12, 1, 0.0),
    (atc("J07BN01"), 12, 110, 2021.0, 2024.0, 0.3, 4, 0.25),
)

# --- pregnancy -----------------------------------------------------------------------------------------
# Conceptions per 1,000 women-years: US age-specific fertility (NVSS 2019) / 0.85 for miscarriage
CONCEPTION_RATES = ((15, 20), (17, 35), (22, 80), (27, 112), (32, 112), (37, 62), (42, 14), (47, 1.5))
CONCEPTION_AGES = (15.0, 49.0)
P_MISCARRIAGE = 0.15
P_GDM = 0.05  # x2.5 if obese, x1.8 if 35+
P_GHT = 0.06  # x2 if obese
PREGNANCY_WEEKS = {"test": 7, "booking": 12, "anomaly": 20, "glucose": 28, "late": 36, "delivery": 39}

# --- targets for the realism report ------------------------------------------------------------------------
# Recorded-condition prevalence at the end of follow-up, by age band, both sexes; approximate values
# read off the sources in TARGET_SOURCES (diagnosed disease where available).
AGE_BANDS = ((0, 18), (18, 40), (40, 60), (60, 80), (80, 200))
TARGET_PREVALENCE = {
    "hypertension": (0.0, 0.08, 0.33, 0.60, 0.70),
    "t2d": (0.0, 0.03, 0.11, 0.20, 0.20),
    "hyperlipidaemia": (0.0, 0.08, 0.30, 0.48, 0.45),
    "ckd": (0.0, 0.01, 0.03, 0.12, 0.30),
    "cad": (0.0, 0.005, 0.05, 0.15, 0.25),
    "hf": (0.0, 0.003, 0.015, 0.055, 0.12),
    "af": (0.0, 0.001, 0.005, 0.045, 0.10),
    "stroke": (0.0, 0.003, 0.02, 0.06, 0.13),
    "copd": (0.0, 0.01, 0.05, 0.10, 0.11),
    "asthma": (0.08, 0.10, 0.09, 0.08, 0.07),
    "depression": (0.04, 0.18, 0.20, 0.17, 0.14),
    "osteoarthritis": (0.0, 0.01, 0.10, 0.28, 0.38),
    "obesity": (0.0, 0.22, 0.28, 0.28, 0.20),
    "hypothyroidism": (0.003, 0.02, 0.06, 0.10, 0.12),
    "osteoporosis": (0.0, 0.0, 0.02, 0.14, 0.22),
    "dementia": (0.0, 0.0, 0.0, 0.04, 0.20),
}
TARGET_SOURCES = {
    "hypertension": "Fryar et al., NCHS Data Brief 289 (NHANES 2015-16): 7.5% (18-39), 33.2% (40-59), 63.1% (60+)",
    "t2d": "CDC National Diabetes Statistics Report 2020: diagnosed 3.0% (18-44), 13.8% (45-64), 21.4% (65+)",
    "hyperlipidaemia": "NHIS / NHANES: ever told high cholesterol or on a statin, ~30% (40-59), ~50% (60+)",
    "ckd": "CDC Chronic Kidney Disease Surveillance System (NHANES 2017-20): stage 3-4 by age",
    "cad": "AHA Heart Disease and Stroke Statistics 2023 (NHANES 2017-20): CHD by age",
    "hf": "AHA Heart Disease and Stroke Statistics 2023; incidence: Framingham / CHS, Bleumink et al. 2004",
    "af": "Go et al., JAMA 2001 (ATRIA): 0.1% (<55) to 10-11% (80+)",
    "stroke": "AHA Heart Disease and Stroke Statistics 2023 (NHANES 2017-20): stroke by age",
    "copd": "CDC BRFSS / NHIS: diagnosed COPD ~3% (18-44), ~7% (45-64), ~11% (65+)",
    "asthma": "CDC NHIS 2019: current asthma 7% (children), 8% (adults)",
    "depression": "CDC BRFSS / Gallup 2023: ever diagnosed depression ~18-20% of adults; F:M ~1.7",
    "osteoarthritis": "CDC arthritis (NHIS): doctor-diagnosed arthritis 29% (45-64), 50% (65+), about half OA",
    "obesity": "NHANES 2017-20 measured obesity ~40%; recorded diagnosis in EHRs ~half of measured",
    "hypothyroidism": "Wyne et al. 2022 (NHANES): treated hypothyroidism ~5%, rising with age, F:M ~5",
    "osteoporosis": "Sarafrazi et al., NCHS Data Brief 405 (NHANES 2017-18): 50+ F 19.6%, M 4.4%",
    "dementia": "Manly et al., JAMA Neurology 2022 (HRS): 10% of 65+, ~35% of 90+",
}
