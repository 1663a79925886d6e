"""Closed-class word lists for English and French and a token categoriser for sense analysis.

Lists were written for this project from standard grammars (function-word inventories of English
and French reference grammars); they are meant to be complete for everyday closed classes, not
exhaustive. Choices:
- article: definite/indefinite/partitive articles; French contracted article+preposition forms
  (du, des, au, aux) count as articles, and elided forms are listed with and without the
  apostrophe (`l'` and `l`) because subword tokenizers often split `l'homme` into `l`, `'`, `homme`.
- pronoun: personal, reflexive, possessive, demonstrative, relative, interrogative and indefinite
  pronouns, including their determiner uses (my, this, some / mon, ce, quelques).
- auxiliary: English be/have/do forms, modals and their contractions; French être and avoir forms.
- conjunction: coordinating and subordinating conjunctions (French `que`/`qu'` is here, though it
  can also be a relative pronoun).
- preposition: simple prepositions (English `as`, `since`, `before` ... are here, not conjunctions).
The categories of one language are disjoint (checked when the module is imported). Negation particles (not, ne, pas)
and adverbs are not closed classes here and come out as 'content'.
"""
from __future__ import annotations

import re
import unicodedata

CATEGORIES = ("article", "preposition", "pronoun", "auxiliary", "conjunction",
              "punctuation", "number", "content")

WORD_CLASSES = {
    "en": {
        "article": "a an the",
        "preposition": """about above across after against along amid amidst among amongst around as at
            before behind below beneath beside besides between beyond by concerning despite down during
            except for from in inside into like near of off on onto opposite out outside over past per
            regarding since through throughout till to toward towards under underneath unlike until up
            upon versus via with within without""",
        "pronoun": """i me my mine myself you your yours yourself yourselves he him his himself she her
            hers herself it its itself we us our ours ourselves they them their theirs themselves one
            oneself this that these those who whom whose which what whoever whomever whatever whichever
            someone somebody something anyone anybody anything everyone everybody everything no-one
            nobody nothing none each every either neither all both some any many much few several other
            others another such""",
        "auxiliary": """be am is are was were been being have has had having do does did will would
            shall should can could may might must ought 'm 're 's 've 'll 'd isn't aren't wasn't
            weren't haven't hasn't hadn't don't doesn't didn't won't wouldn't shan't shouldn't can't
            cannot couldn't mightn't mustn't""",
        "conjunction": """and or but nor yet so because although though while whilst whereas if unless
            whether than once lest""",
    },
    "fr": {
        "article": "le la les l' l un une des du au aux",
        "preposition": """à de d' d en dans par pour sur avec sans sous entre vers chez contre depuis
            pendant avant après derrière devant parmi selon malgré durant envers hors jusque jusqu'
            jusqu dès outre via auprès près sauf hormis concernant""",
        "pronoun": """je j' j tu il elle on nous vous ils elles me m' m te t' t se s' s moi toi soi lui
            leur eux y qui quoi dont où lequel laquelle lesquels lesquelles auquel auxquels auxquelles
            duquel desquels desquelles ce c' c cet cette ces celui celle ceux celles ceci cela ça
            mon ton son ma ta sa mes tes ses notre votre nos vos leurs mien mienne miens miennes tien
            tienne tiens tiennes sien sienne siens siennes nôtre nôtres vôtre vôtres chacun chacune
            aucun aucune plusieurs certains certaines quelques quelqu'un quelqu'une quelque rien tout
            tous toute toutes autrui""",
        "auxiliary": """être suis es est sommes êtes sont étais était étions étiez étaient fus fut
            fûmes fûtes furent serai seras sera serons serez seront serais serait serions seriez
            seraient sois soit soyons soyez soient fusse fusses fût fussions fussiez fussent été étant
            avoir ai as a avons avez ont avais avait avions aviez avaient eus eut eûmes eûtes eurent
            aurai auras aura aurons aurez auront aurais aurait aurions auriez auraient aie aies ait
            ayons ayez aient eusse eusses eût eussions eussiez eussent eu ayant""",
        "conjunction": """et ou mais donc or ni car que qu' qu si comme quand lorsque lorsqu'
            lorsqu puisque puisqu' puisqu quoique quoiqu' quoiqu parce tandis afin""",
    },
}

NUMBER_WORDS = {
    "en": """two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
        sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety
        hundred thousand million billion""",
    "fr": """deux trois quatre cinq six sept huit neuf dix onze douze treize quatorze quinze seize
        vingt trente quarante cinquante soixante septante octante nonante cent cents mille million
        millions milliard milliards""",
}



def build_lexicon() -> dict[str, dict[str, frozenset[str]]]:
    """{lang: {category: words}} from WORD_CLASSES and NUMBER_WORDS; checks the categories of a
    language are disjoint, so a word has one category per language."""
    lexicon = {}
    for lang, classes in WORD_CLASSES.items():
        sets = {cat: frozenset(words.split()) for cat, words in classes.items()}
        sets["number"] = frozenset(NUMBER_WORDS[lang].split())
        seen: dict[str, str] = {}
        for cat, words in sets.items():
            for w in words:
                if w in seen:
                    raise ValueError(f"{lang}: {w!r} is listed as both {seen[w]} and {cat}")
                seen[w] = cat
        lexicon[lang] = sets
    return lexicon


LEXICON = build_lexicon()

SPACE_MARKERS = "\u2581\u0120 \t\n"  # '▁' (SentencePiece), 'Ġ' (GPT-2 byte-level BPE), whitespace
DIGITS = re.compile(r"^[+-]?\d+([.,:/]\d+)*[.,]?$|^\d+(e|er|ère|es|th|st|nd|rd)$")


def normalize_token(token_str: str) -> str:
    """Lower-cased token without leading space markers ('▁', 'Ġ', spaces), curly apostrophes → '."""
    return token_str.lstrip(SPACE_MARKERS).strip().lower().replace("\u2019", "'")


def categorize(token_str: str, lang: str | None = None) -> str:
    """Category of a token or word: 'article', 'preposition', 'pronoun', 'auxiliary',
    'conjunction', 'punctuation' (only punctuation/symbol characters, or nothing but a space
    marker), 'number' (digits such as 1,000 / 3.5 / 2e / 21st, or a spelled-out cardinal from
    two/deux upwards; one/un/une stay pronoun/article) or 'content' (anything else).

    lang 'en' or 'fr' uses that language's lists; lang None tries English first, then French
    (so 'a' is an English article, not French avoir, and 'on' an English preposition).
    """
    if lang is not None and lang not in LEXICON:
        raise ValueError(f"unknown language {lang!r}; expected 'en', 'fr' or None")
    word = normalize_token(token_str)
    if not word or all(unicodedata.category(c)[0] in "PSZ" for c in word):
        return "punctuation"
    if DIGITS.match(word):
        return "number"
    for code in ([lang] if lang else ["en", "fr"]):
        for category, words in LEXICON[code].items():
            if word in words:
                return category
    return "content"
