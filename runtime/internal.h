/* The runtime's private structures: the loaded model, shared by session, policy and eval. */
#ifndef ERT_RUNTIME_INTERNAL_H
#define ERT_RUNTIME_INTERNAL_H

#include "backend.h"
#include "exitrt/exitrt.h"

/* The softmax temperatures a policy or a calibration file may give (the fit searches
 * 0.05..20, well inside). */
#define ERT_TEMP_MIN 1e-3
#define ERT_TEMP_MAX 1e3

typedef enum ert_node_type {
    ERT_NODE_FLATTEN = 0,
    ERT_NODE_LINEAR,
    ERT_NODE_LAYERNORM,
    ERT_NODE_RESIDUAL,
    ERT_NODE_CONV2D,
    ERT_NODE_RELU,
    ERT_NODE_MAXPOOL,
    ERT_NODE_AVGPOOL /* global_avgpool too: its window is the whole image */
} ert_node_type;

/* The shape of one sample: an image [c, h, w] or a vector of c values (h = w = 1). */
typedef struct ert_shape {
    int c, h, w;
    int image;
} ert_shape;

/* One op of the config. A residual holds its sub-ops. Widths are per sample. */
typedef struct ert_node {
    ert_node_type type;
    int in, out;              /* elements per sample before and after */
    ert_shape in_shape, out_shape;
    ert_conv_geom geom;       /* CONV2D and the pools */
    ert_activation act;
    float eps;
    char *weight_name, *bias_name; /* for messages; NULL when absent */
    float *weight, *bias;          /* f32 host copies; NULL when absent */
    struct ert_node *sub;          /* RESIDUAL */
    int num_sub;
    double flops;                  /* per sample, sub-ops included */
    int64_t params;
} ert_node;

typedef struct ert_seq {
    ert_node *nodes;
    int count;
} ert_seq;

typedef struct ert_stage {
    char *name;
    ert_seq body, head; /* head.count == 0: no exit after this stage */
    int exit_index;     /* -1 without a head */
    int width_in, width_out;
} ert_stage;

struct ert_model {
    char *name;
    char *dir;
    int input_ndim;
    int input_shape[4];
    int input_size;
    int channels;          /* normalisation channels (first input dim, 1 for vectors) */
    float *scale, *shift;  /* per channel: x * scale + shift = (x - mean) / std */
    int num_classes;
    char **labels;
    int num_stages;
    ert_stage *stages;
    int num_exits;
    int exit_stage[ERT_MAX_EXITS];
    float temperature[ERT_MAX_EXITS];
    int max_width;         /* widest activation, input included */
    int max_depth;         /* deepest residual nesting */
};

/* Reads a whole file into a malloc'd, NUL-terminated buffer (*size excludes the NUL).
 * Errors name the file. */
ert_status ert_file_read(const char *path, char **data, size_t *size);

/* Checks that `data` fits a session: batch <= max_batch, the model's sample size, at
 * least one sample, labels (required when need_labels) within the model's classes. */
ert_status ert_dataset_check(const ert_session *session, const ert_dataset *data, int batch, int need_labels);

/* Fills the decide kernel's parameters for one run; checks the policy fits the model
 * (one threshold or one per exit, fixed exit in range). */
ert_status ert_policy_exit_params(const ert_policy *policy, const ert_model *model, ert_exit_params *out);
/* 1 if the scheduled policy draws exits from a hazard (no per-sample schedule needed). */
int ert_policy_has_hazard(const ert_policy *policy);

/* Sets profile->padding_waste from its stages' rows, padded rows and FLOPs. */
void ert_profile_padding_waste(ert_profile *profile);

#endif
