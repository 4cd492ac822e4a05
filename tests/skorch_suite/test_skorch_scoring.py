"""skorch's own tests of its scoring callbacks, run on the distiller.

skorch runs them on a regressor with a four-sample data set; here the net
is the distiller, with skorch's classification data and classifier module.
"""

import pytest
from skorch.tests.callbacks.test_scoring import TestBatchScoring as SkorchBatchScoring
from skorch.tests.callbacks.test_scoring import TestEpochScoring as SkorchEpochScoring
from skorch.tests.callbacks.test_scoring import (
    TestPassthrougScoring as SkorchPassthroughScoring,
)
from skorch.tests.callbacks.test_scoring import (
    TestScoringCacheGlobalControl as SkorchCacheControl,
)

from .adapter import SuiteDistiller


class Classification:
    """The distiller on skorch's classification data and module."""

    @pytest.fixture
    def net_cls(self):
        return SuiteDistiller

    @pytest.fixture
    def module_cls(self, classifier_module):
        return classifier_module

    @pytest.fixture
    def data(self, classifier_data):
        X, y = classifier_data
        return X[:100], y[:100]


class TestEpochScoring(Classification, SkorchEpochScoring):
    pass


class TestBatchScoring(Classification, SkorchBatchScoring):
    pass


class TestPassthroughScoring(Classification, SkorchPassthroughScoring):
    pass


class TestCacheControl(Classification, SkorchCacheControl):
    pass
