"""ztgate's scoring engine: pure numpy, no I/O (scoring/eval/ excepted).

    profile = scoring.enrol(batches)                    # Profile (versioned; to_bytes()/Profile.from_bytes())
    profile = scoring.enrol_session(batches)            # the same from one session's message-sized batches
    profile = scoring.learn(profile, scorer.summary())  # only from a session that raised nothing
    scorer = scoring.SessionScorer(profile, expected_rtt_ms=None)
    assessment = scorer.update(batch)                   # batch: numpy array of scoring.events.EVENT_DTYPE
"""

from .enrolment import enrol, enrol_session
from .population import Population, default_population, shipped_population
from .profile import PROFILE_VERSION, Profile, ProfileError, SessionSummary, learn
from .scorer import SIGNAL_NAMES, SessionScorer
from .signals import Assessment, Evidence, Signal

__all__ = [
    "PROFILE_VERSION",
    "SIGNAL_NAMES",
    "Assessment",
    "Evidence",
    "Population",
    "Profile",
    "ProfileError",
    "SessionScorer",
    "SessionSummary",
    "Signal",
    "default_population",
    "enrol",
    "enrol_session",
    "learn",
    "shipped_population",
]
