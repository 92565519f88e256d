# Engine tests (issue 2): reference logits/losses of every model in ../shared/testdata/models,
# generation, the perturbation hook, malformed inputs, and fuzz targets for the parsers.
pk_add_test(test_model SOURCES test_model.c LIBS pk_model PkgConfig::CJSON LABELS unit TIMEOUT 300)
pk_add_test(test_model_errors SOURCES test_model_errors.c LIBS pk_model LABELS unit TIMEOUT 120)
