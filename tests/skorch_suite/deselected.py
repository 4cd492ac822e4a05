"""The tests of skorch's suite that a distiller must fail, each with why.

Keys are ``Class::test`` (every parametrisation) or ``Class::test[params]``.
Only differences a distiller must have belong here.
"""

_SKORCH_FILE = (
    "loads skorch's own CUDA-pickled NeuralNetClassifier from a path relative to "
    "skorch's source checkout (fails for skorch itself when installed)"
)
_CLASS_NAME = (
    "expects a message or repr naming skorch's class, NeuralNetClassifier, "
    "and its module"
)
_PROJECTORS = (
    "counts the parameters the optimizer or on_grad_computed sees: a distiller's "
    "projectors train in the same optimizer as the student"
)
_MODULES = (
    "expects `module` alone among skorch's modules: a distiller registers its "
    "projectors (projectors_, logit_projector_) as modules too"
)
_COPIED = (
    "expects module_ to be the instance passed: a distiller trains a deep copy, "
    "never the user's object (it stays as it was passed)"
)
_PROBE = (
    "counts the student's forward calls: a distiller calls it once more before "
    "training, to measure its feature width on a sample of X (which also refuses "
    "data the networks cannot take before any training)"
)
_CLASSES = (
    "labels of another class count, or classes= not naming the labels: a "
    "distiller's classes are the teacher's outputs (its output i is classes_[i])"
)
_SEQUENCES = "sequence targets: a distiller's y is one class label per sample"
_DICT_INPUT = (
    "dict inputs: a distiller takes arrays, tensors or a Dataset (its input checks, "
    "teacher cache and array batches read one input tensor)"
)
_FAKE_DEVICE = (
    "device='foo' with mocked .to(): the distiller places its frozen teacher "
    "with torch, which refuses an unknown device"
)
_ONE_OUTPUT = (
    "a module of one output cannot distil the suite's teacher of 2 classes "
    "(refused before training)"
)

_REGRESSION = (
    "expects the scores (or call counts) of skorch's regressor on its four-sample, "
    "one-feature regression data; a distiller is a classifier"
)
_NO_LABELS = (
    "a validation set without labels: a distiller's validation loss needs them "
    "(its cross-entropy term)"
)

DESELECTED: dict[str, str] = {
    "TestNet::test_load_cuda_params_to_cpu": _SKORCH_FILE,
    "TestNet::test_pickle_load": _SKORCH_FILE,
    "TestNet::test_not_init_raises": _CLASS_NAME,
    "TestNet::test_not_fitted_raises": _CLASS_NAME,
    "TestNet::test_repr_uninitialized_works": _CLASS_NAME,
    "TestNet::test_repr_initialized_works": _CLASS_NAME,
    "TestNet::test_repr_fitted_works": _CLASS_NAME,
    "TestClassifier::test_pass_empty_classes_raises": _CLASS_NAME,
    "TestNet::test_save_load_state_dict_no_duplicate_registration_after_initialize": (
        _MODULES
    ),
    "TestNet::test_save_load_state_dict_no_duplicate_registration_after_clone": (
        _MODULES
    ),
    "TestNet::test_callback_on_grad_computed": _PROJECTORS,
    "TestNet::test_custom_module_params_passed_to_optimizer": _PROJECTORS,
    "TestNet::test_criterion_params_passed_to_optimizer_if_any": _PROJECTORS,
    "TestNet::test_callback_keeps_order": (
        "lists skorch's default callbacks: a distiller's also record its loss terms "
        "(train_ce, train_kd, train_feat) and train_acc"
    ),
    "TestNet::test_fit_lbfgs_optimizer": (
        "asserts train_loss < 1.0: a distiller's train_loss adds its feature and KD "
        "terms to the cross-entropy"
    ),
    "TestNet::test_fit_params_passed_to_module": _PROBE,
    "TestNet::test_fit_params_passed_to_module_in_pipeline": _PROBE,
    "TestNet::test_modules_reinit_when_both_initialized_but_custom_module_changed": (
        _COPIED
    ),
    "TestNet::test_custom_module_is_init_when_default_module_already_is": _COPIED,
    "TestNet::test_net_variable_prediction_lengths": _SEQUENCES,
    "TestNet::test_net_variable_label_lengths": _SEQUENCES,
    "TestNet::test_data_dict_and_fit_params": _DICT_INPUT,
    "TestNet::test_data_dict_and_fit_params_conflicting_names_raises": _DICT_INPUT,
    "TestNet::test_fit_with_dataset_stratified_without_explicit_y_raises": (
        "expects skorch's refusal of a stratified split without y: a distiller reads "
        "the labels a Dataset carries (targets, or a skorch Dataset's y)"
    ),
    "TestNet::test_moving_custom_modules_to_device": _FAKE_DEVICE,
    "TestNet::test_set_params_on_custom_module_preserves_its_device": _FAKE_DEVICE,
    "TestNet::test_optimizer_initialized_after_module_moved_to_device": _ONE_OUTPUT,
    "TestClassifier::test_non_binary_classes_set_by_default": _CLASSES,
    "TestClassifier::test_classes_data_torch_tensor": _CLASSES,
    "TestClassifier::test_classes_with_gaps": _CLASSES,
    "TestClassifier::test_pass_classes_explicitly_overrides": _CLASSES,
    "TestClassifier::test_classes_are_set_with_tensordataset_explicit_y": _CLASSES,
    "TestClassifier::test_classes_are_set_with_tensordataset_implicit_y": _CLASSES,
    "TestClassifier::test_error_when_classes_could_not_be_inferred": _CLASSES,
    # scoring callbacks (tests/skorch_suite/test_skorch_scoring.py)
    "TestEpochScoring::test_correct_valid_score": _REGRESSION,
    "TestEpochScoring::test_correct_train_score": _REGRESSION,
    "TestEpochScoring::test_with_accuracy_score": _REGRESSION,
    "TestEpochScoring::test_with_make_scorer_accuracy_score": _REGRESSION,
    "TestEpochScoring::test_with_callable_accuracy_score": _REGRESSION,
    "TestEpochScoring::test_target_extractor_is_called": _REGRESSION,
    "TestEpochScoring::test_net_input_is_scoring_input": _REGRESSION,
    "TestEpochScoring::test_without_target_data_works": _NO_LABELS,
    "TestBatchScoring::test_correct_train_loss_values": _REGRESSION,
    "TestBatchScoring::test_correct_valid_loss_values": _REGRESSION,
    "TestBatchScoring::test_correct_mse_values_for_batches": _REGRESSION,
    "TestBatchScoring::test_with_accuracy_score": _REGRESSION,
    "TestBatchScoring::test_with_make_scorer_accuracy_score": _REGRESSION,
    "TestBatchScoring::test_with_callable_accuracy_score": _REGRESSION,
    "TestBatchScoring::test_target_extractor_is_called": _REGRESSION,
    "TestBatchScoring::test_without_target_data_works": _NO_LABELS,
}
