"""skorch's own tests of NeuralNet and NeuralNetClassifier, run on the distiller."""

import pytest
from skorch.tests.test_classifier import TestNeuralNet as SkorchClassifierTests
from skorch.tests.test_net import TestNeuralNet as SkorchNetTests

from .adapter import SuiteDistiller


class TestNet(SkorchNetTests):
    @pytest.fixture(scope="module")
    def net_cls(self):
        return SuiteDistiller


class TestClassifier(SkorchClassifierTests):
    @pytest.fixture(scope="module")
    def net_cls(self):
        return SuiteDistiller
