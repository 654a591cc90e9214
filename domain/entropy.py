"""How guessable a proposed secret is: its estimated entropy, in bits (docs/design.md, "Who
may do what").

A caller of the helper may propose its grant's secret, and whoever knows that secret holds the
grant: a retried acquire gets the lease and its token back, and a release by the secret alone
frees it. A proposal must therefore be as hard to guess as one drawn at random. No check can
see how a string was made, so this one asks how short a description a simple model of
*made-up* strings gives it: the string as a sequence of pieces, each a word (common English
and this project's own), a run of letters (by English letter pairs), a number (counters and
dates: runs, steps, leading zeros), a separator, a run of random characters (of base64url,
hex or digits), a copy of an earlier piece, a sequence (`abc`, `321`, `aaa`), a stretch of a
keyboard row, or a time (epoch seconds, ms, us or ns near `now_ms` or in this century; a
date, with or without its time of day). `estimated_bits` is -log2 of the probability the
model gives the string, summed over every way it can make it; a proposal under
`MIN_PROPOSAL_BITS` is refused.

What status shows is given: the holder, the database and the group are written first (the
`given`), and the secret is scored as their continuation, so that a secret copied from them
costs only its copy (holder `invoice-sync/8f14` proposing `invoice-sync-<epoch ms>` scores
far less than it does alone: benchmarks/secret_entropy.py prints both). It is
bits(given + secret) - bits(given), each over the ways that end a piece where the secret
starts (one across would leave no distribution).

Why no random secret is refused: the model is a probability distribution over strings (each
choice below sums to at most 1), so fewer than 2^B strings can have an estimate under B bits.
A secret drawn with H bits of min-entropy (secrets.token_urlsafe(16): 128) is therefore one of
them with probability at most 2^(B - H): 2^-32 for B = 96, whatever the model says of any
particular string. Given a public context, the secret's probability is that of the pieces
that make it after the context (each piece's chance depends only on what came before it, so
for every fixed context and every `now_ms` the continuations again sum to at most 1): the
bound holds for each context alone, whatever the holder or database, since a random secret
is drawn without regard to them. The model only decides which made-up strings are caught;
its tables (the letter pairs and the words) were counted once from this repository's
README.md and docs/design.md.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence

# A proposal must look like this much: as hard to guess as 96 random bits.
MIN_PROPOSAL_BITS = 96

_BASE64URL = string.ascii_letters + string.digits + "-_"
_HEX = "0123456789abcdef"
_LOWER = string.ascii_lowercase
# How a piece starts (the rest, 0.07, is the end of the string).
_WORD, _LETTERS, _NUMBER, _SEPARATOR = 0.25, 0.14, 0.12, 0.10
_RANDOM, _COPY, _SEQUENCE, _KEYBOARD, _TIME = 0.10, 0.10, 0.05, 0.03, 0.04
_END = 1 - (
    _WORD + _LETTERS + _NUMBER + _SEPARATOR + _RANDOM + _COPY + _SEQUENCE + _KEYBOARD + _TIME
)
# A word or a run of letters is lower case, Capitalized or UPPER.
_LOWER_CASE, _CAPITALIZED, _UPPER_CASE = 0.6, 0.3, 0.1
_CASES = ((str.lower, _LOWER_CASE), (str.capitalize, _CAPITALIZED), (str.upper, _UPPER_CASE))
# A random run's alphabet, and how likely it is.
_RANDOM_ALPHABETS = (
    (frozenset(_BASE64URL), 64, 0.5),
    (frozenset(_HEX), 16, 0.3),
    (frozenset(_HEX.upper()), 16, 0.1),
    (frozenset(string.digits), 10, 0.1),
)
_KEYBOARD_ROWS = ("1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm")
# A piece less likely than this is left out: it could not make a string's estimate short (and
# leaving a way to make a string out only lengthens its estimate, never refuses more).
_NEGLIGIBLE = 2.0**-160
# Longer pieces are less likely: each piece's length is geometric, with these ratios.
_LETTERS_GO_ON, _NUMBER_GOES_ON, _RANDOM_GOES_ON, _REPEAT_GOES_ON = 0.8, 0.7, 0.9, 0.8


def estimated_bits(secret: str, given: Sequence[str] = (), now_ms: int | None = None) -> float:
    """-log2 of the probability the model of made-up strings gives `secret` (inf: none),
    after the public strings `given` (each followed by a newline, which no secret has), at
    the time `now_ms` (None: times anywhere in this century)."""
    start = sum(len(public) + 1 for public in given)
    text = "".join(f"{public}\n" for public in given) + secret
    n = len(text)
    # reach[i]: the probability of making text[start:i] in whole pieces after text[:start].
    # The context is history, never scored: a piece starts at `start` or later, and may copy
    # from the context (a piece across the boundary is left out, which only lengthens).
    reach = [0.0] * (n + 1)
    reach[start] = 1.0
    for i in range(start, n):
        if reach[i]:
            for j, p in _pieces(text, i, now_ms):
                reach[j] += reach[i] * p
    made = reach[n] * _END
    return -math.log2(made) if made > 0 else math.inf


def _pieces(s: str, i: int, now_ms: int | None = None) -> list[tuple[int, float]]:
    """Every piece the model can make at `i` that `s` continues with: (its end, probability)."""
    found: list[tuple[int, float]] = []
    lower = s[i:].lower()
    for j in range(i + 1, min(len(s), i + _LONGEST_WORD) + 1):
        chance = _WORD_CHANCE.get(lower[: j - i])
        if chance:
            found.append((j, _WORD * _cased(s[i:j]) * chance))
    found += _letters(s, i) + _number(s, i) + _random(s, i) + _repeats(s, i)
    if s[i] in string.digits:
        found += _times(s, i, now_ms)
    if s[i] in "-_":
        found.append((i + 1, _SEPARATOR / 2))
    return found


def _cased(piece: str) -> float:
    low = piece.lower()
    return sum(chance for case, chance in _CASES if case(low) == piece)


def _geometric(length: int, goes_on: float, shortest: int = 1) -> float:
    return (1 - goes_on) * goes_on ** (length - shortest)


def _letters(s: str, i: int) -> list[tuple[int, float]]:
    """A run of letters, each drawn by the letter before it (English letter pairs), in one
    of the cases (kept track of as the run grows: `_cased` of each prefix would be slow)."""
    found: list[tuple[int, float]] = []
    chance, before, j = 1.0, None, i
    # Every letter so far lower case; the first upper and the rest lower; every one upper.
    lower = capitalized = upper = True
    while j < len(s) and s[j] in _ASCII_LETTERS and chance > _NEGLIGIBLE:
        letter = _LOWER.index(s[j].lower())
        chance *= (_FIRST if before is None else _PAIRS[before])[letter]
        capitalized = capitalized and (s[j].isupper() if j == i else s[j].islower())
        lower, upper = lower and s[j].islower(), upper and s[j].isupper()
        before, j = letter, j + 1
        cased = lower * _LOWER_CASE + capitalized * _CAPITALIZED + upper * _UPPER_CASE
        if cased:
            found.append((j, _LETTERS * cased * _geometric(j - i, _LETTERS_GO_ON) * chance))
    return found


def _number(s: str, i: int) -> list[tuple[int, float]]:
    """A run of digits: a counter or a date (leading zeros; repeats and steps likely)."""
    found: list[tuple[int, float]] = []
    chance, j = 1.0, i
    seen: list[int] = []
    while j < len(s) and s[j] in string.digits and chance > _NEGLIGIBLE:
        digit = int(s[j])
        if not seen:
            chance *= {0: 0.3, 1: 0.2}.get(digit, 0.5 / 8)
        else:
            likely = {seen[-1], (seen[-1] + 1) % 10, (seen[-1] - 1) % 10}
            if len(seen) > 1:
                likely.add((2 * seen[-1] - seen[-2]) % 10)
            chance *= 0.5 * (digit in likely) / len(likely) + 0.05
        seen.append(digit)
        j += 1
        found.append((j, _NUMBER * _geometric(j - i, _NUMBER_GOES_ON) * chance))
    return found


def _random(s: str, i: int) -> list[tuple[int, float]]:
    """A run of random characters of one alphabet."""
    found: list[tuple[int, float]] = []
    for alphabet, size, weight in _RANDOM_ALPHABETS:
        chance, j = _RANDOM * weight, i
        while j < len(s) and s[j] in alphabet and chance > _NEGLIGIBLE:
            chance /= size
            j += 1
            found.append((j, chance * _geometric(j - i, _RANDOM_GOES_ON)))
    return found


def _repeats(s: str, i: int) -> list[tuple[int, float]]:
    """A copy of what came before (from the start that matches longest), a sequence going
    on from the character before (a step of -1, 0 or +1), or a stretch of a keyboard row."""
    found: list[tuple[int, float]] = []
    longest = 0
    for source in range(i - 1, -1, -1):  # the nearest first: a run copies its last character
        longest = max(longest, _common(s, source, i))
        if longest == len(s) - i:
            break
    for length in range(2, longest + 1):
        found.append((i + length, _COPY / i * _geometric(length, _REPEAT_GOES_ON, 2)))
    for step in (-1, 0, 1) if i else ():
        j = i
        while j < len(s) and ord(s[j]) - ord(s[j - 1]) == step:
            j += 1
            found.append((j, _SEQUENCE / 3 * _geometric(j - i, _REPEAT_GOES_ON)))
    lower = s[i:].lower()
    for row in _KEYBOARD_ROWS:
        at, length = row.find(lower[0]), 0
        while (
            at >= 0
            and length < min(len(lower), len(row) - at)
            and row[at + length] == lower[length]
        ):
            length += 1
        for end in range(2, length + 1):
            piece = s[i : i + end]
            cased = _cased(piece) if piece.isalpha() else 1.0
            chance = _KEYBOARD / len(_KEYBOARD_ROWS) / len(row) * cased
            found.append((i + end, chance * _geometric(end, _REPEAT_GOES_ON, 2)))
    return found


# Epoch times: (digits, ms per unit of the first 13 digits at most, digits past the ms).
_EPOCHS = ((10, 1000, 0), (13, 1, 0), (16, 1, 3), (19, 1, 6))
_NEAR_MS = 86_400_000  # a time within a day of now
_CENTURY_MS = (10**12, 42 * 10**11)  # 2001-09-09 to 2103: what any clock may say
_YEARS = 130  # 1970-2099
_DATE = re.compile(
    r"(19[7-9][0-9]|20[0-9][0-9])([-_]?)(0[1-9]|1[0-2])\2(0[1-9]|[12][0-9]|3[01])", re.ASCII
)
# A time of day after a date, its parts apart as the date's are.
_TIME_OF_DAY = {
    apart: re.compile(rf"[-_T]?([01][0-9]|2[0-3]){apart}([0-5][0-9]){apart}([0-5][0-9])", re.ASCII)
    for apart in ("", "-", "_")
}


def _times(s: str, i: int, now_ms: int | None) -> list[tuple[int, float]]:
    """A time: epoch seconds, ms, us or ns (half the chance near `now_ms`, half anywhere in
    this century, uniform over each), or a date (1970-2099, its parts apart by nothing, `-`
    or `_`), with or without a time of day (HHMMSS, after nothing, `-`, `_` or `T`)."""
    found: list[tuple[int, float]] = []
    for digits, unit_ms, past_ms in _EPOCHS:
        run = s[i : i + digits]
        if len(run) < digits or not all(c in string.digits for c in run):
            continue
        at_ms = int(run[: digits - past_ms]) * unit_ms
        chance = 0.0
        if now_ms is not None and abs(at_ms - now_ms) <= _NEAR_MS:
            chance += 0.5 / (2 * _NEAR_MS // unit_ms + 1)
        if _CENTURY_MS[0] <= at_ms < _CENTURY_MS[1]:
            chance += 0.5 * unit_ms / (_CENTURY_MS[1] - _CENTURY_MS[0])
        if chance:
            found.append((i + digits, _TIME / 8 * chance / 10**past_ms))
    date = _DATE.match(s, i)
    if date:
        chance = _TIME / 4 / _YEARS / 3 / 12 / 31
        found.append((date.end(), chance))
        clock = _TIME_OF_DAY[date.group(2)].match(s, date.end())
        if clock:
            found.append((clock.end(), chance / 4 / 86_400))
    return found


def _common(s: str, source: int, i: int) -> int:
    """How long s[source:] and s[i:] agree (the copy may overlap what it makes)."""
    length = 0
    while i + length < len(s) and s[source + length] == s[i + length]:
        length += 1
    return length


def _table(row: str) -> tuple[float, ...]:
    """A row of weights, each a base-62 digit w for 2^(w/4), as probabilities."""
    weights = [2 ** (_DIGITS62.index(w) / 4) for w in row]
    total = sum(weights)
    return tuple(weight / total for weight in weights)


_DIGITS62 = string.digits + string.ascii_lowercase + string.ascii_uppercase
_ASCII_LETTERS = frozenset(string.ascii_letters)
# Letter pairs, counted: the first letter of a word, then a row per letter (weights, _table).
_LETTER_PAIRS = (
    "HzCAAAxyFhqDByDzuCGHvmCfj8",
    "0vzu0nq6x0rxwD0t0zCClmkmq0",
    "u40lu000m00p00s00ee8m000q0",
    "x0i4v80ym0ut00A0ookxo000j0",
    "ts4iz8e0q0eoe0rf0kt4g0a0q0",
    "C8xBttjal94xyBkrlFDxhtqsm6",
    "p000nk00q0080du00q4pt00040",
    "m080t09nq08b0jj40vl4h00090",
    "z800F090s000i4wa0o6d8000d0",
    "ogstslo0609uvDzj0vxF0q0d0j",
    "0000e000a000009000c0600000",
    "de00x400e00b6ge000l0400000",
    "u94vDi80y04u00wp0dqml800n0",
    "xo6ky900t006h6vr00t4h000p4",
    "u4wBAjx0o9gqjuwj09wzes80k0",
    "gevsiui0h8pwtFqq0BuAyov8d9",
    "ta8fw046o08s48tn0pppl090r0",
    "00000000000p00000000w00000",
    "x0jsE9m6x8kjplz60rvrrs90u0",
    "s4ldFa0us0fk90slp6rBm0m0g0",
    "z0m6D48GB00qd0xd9tAsn0n0p0",
    "cdijp6l0q44rixts0ruu000940",
    "q000z000o00000p60000000000",
    "v0j0r00vu0000qo00sn4000000",
    "h0g0f004e000000m440k000460",
    "d009g0008004dpjj06ri408008",
    "c000j000000000080000000000",
)
# Words, the most likely first.
_WORD_LIST = (
    "password secret admin test prod staging stage dev qa uat demo example sample key token "
    "pass login user root guest default hello world welcome letmein qwerty monkey dragon master "
    "shadow sunshine princess football baseball iloveyou trustno abc xyz foo bar baz quick "
    "brown fox jumps lazy dog correct horse battery staple my our this is the new old fn id db "
    "svc env prd tmp temp job worker api app web service order orders payment payments invoice "
    "billing customer account users session request response lambda handler function aws cloud "
    "server client data info main primary backup one two three four five six seven eight nine "
    "ten first second third alpha beta gamma delta red green blue black white and its lease it "
    "of in that quota item at with leases on to ms or for py as each limit an by every database "
    "group so mysql dynamodb helper no own write connection per back store grant make not what "
    "after when from same ttl refused connlease shard invocation max release local before "
    "acquire time holder hold warm set are never wait nothing change run writes md groups pool "
    "idle only share note use may read full holds until name tests then docs once through wcu "
    "them fence caller table which most costs capacity whose if held against past error gives "
    "answer other give status reserved waits runs reliability domain close remaining renew "
    "split reservation items live timeout functions connections keeps takes acquirer both else "
    "reads than margin was more about has ticket any changes another holders over does action "
    "environment model expired written would be left they mariadb below granted query retry "
    "still under batch borrowed who expiry version epoch limits integration embedded stack "
    "bench ends while all up says shards take lost reset invocations benchmarks last within "
    "requests adapters finds where can cannot round slot code again since counter room alone "
    "waiting waiters waiter released concurrency fences message storeunavailable free next "
    "template also keep counts grants names quotas invalidinput their direct mode ok do instead "
    "idempotency errors endpoint context statement memory entry long kb none gets reclaimed "
    "needs twice unit infra your import plus applied character cost design between end capped "
    "true powertools renewal others malformed sets without body trip tables kept closed "
    "operator cli now out cap entries deadline load whole stale but updateitem size already "
    "rules served shares lowered drain bad must invoke false answers retried optional renewed "
    "event count connectionleases sdk short could socket skew stays partition callers taken "
    "contract protocol tag later execution environments backoff expires leaves python connect "
    "acquirers serves have reservations above whatever readme logs shows url outcome type field "
    "seeder raised typed less line library budget closes given starts queries args those times "
    "way invariants plan proposed missing need watch clock conditional removes borrow input ids "
    "go call characters failure off open longer checked pymysql lock bound clocks apart attempt "
    "utilization how throttling scale command fault campaign seal condition settle map seconds "
    "lent needed checks create host port moto boto someone raises consistent longest random "
    "unless named json examples retryable such running variables made itself bounds down took "
    "chart side application applies sizes rates stores counted oldest force layout settings sam "
    "single freed late accept seen lives opens burst original extra loopback see targets result "
    "billed saw nocapacity operation returns hot sum there keys gone details databases "
    "unknowndatabase throttle failures metric metrics timeouts will oversubscription goes "
    "harness threads holding used cloudwatch refuses failed unchanged rcu frees drains stops "
    "shape part parts tokens layer dependencies measured copy ceiling unknown retired pending "
    "step commit allows earlier far enforces configuration reclaimer race machine venv tmux "
    "packages try anyone wanted moment these came notes rejected refusal remove batchgetitem "
    "come behind borrows learns document letters digits bounded number sent outside "
    "corruptquota reason requestinprogress find alarms label noconnectionslefterror everything "
    "keepwarm included minutes invokes outlives hosts temporary statements driver steady nobody "
    "frozen issue inside employees custom resource shared succeeded output told emf retries "
    "hotspot refusals idempotent started bills half units steps path exactly beside pure "
    "tickets calls small package runtime why pydantic hypothesis wrong let hash interleavings "
    # Names of functions and jobs (F7: `reporting-job-<epoch ms>`).
    "sync report reporting cron task nightly daily hourly etl export"
)
_WORDS = _WORD_LIST.split()

# The first letter of a word, then each letter by the one before it (a-z each).
_FIRST = _table(_LETTER_PAIRS[0])
_PAIRS = tuple(_table(row) for row in _LETTER_PAIRS[1:])
# Words by rank r, with probability in proportion to 1 / (r + 8).
_RANKS = sum(1 / (rank + 8) for rank in range(len(_WORDS)))
_WORD_CHANCE = {word: 1 / (rank + 8) / _RANKS for rank, word in enumerate(_WORDS)}
_LONGEST_WORD = max(map(len, _WORDS))
