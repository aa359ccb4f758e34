// llamacpp_logits: llama.cpp's teacher-forced logits and greedy continuation for a GGUF file,
// in the format of testdata/models/*/NAME.logits.txt and NAME.greedy.txt.
//
// EdgeLLM's own program (not llama.cpp code); it links against llama.cpp's libllama.
// Build and use: see docs/peer/README.md.
//
//   llamacpp_logits MODEL.gguf LOGITS_OUT GREEDY_OUT [N_PROMPT [N_GREEDY]]
//
// What it does, fixed so that anyone gets the same numbers:
//   - CPU only, 1 thread, F32 K and V cache, flash attention off, context 512;
//   - feeds N_PROMPT (default 24) token ids, id_i = (37*i + 5) mod 1024, at positions 0..N_PROMPT-1,
//     in ONE llama_decode with every position's logits requested, no BOS added;
//   - writes LOGITS_OUT: one line per position, that position's n_vocab logits as "%.7g"
//     separated by single spaces;
//   - then decodes N_GREEDY (default 20) more tokens, one llama_decode each, at positions
//     N_PROMPT.., each the argmax of the previous logits (lowest id on a tie), and writes their
//     ids to GREEDY_OUT on one line.
// With LLAMACPP_LOGITS_MARGINS set it also prints to stderr the smallest margin (best logit minus
// runner-up) over the greedy choices, and each choice's margin: a seed whose greedy choices all
// win by a clear margin gives a continuation that other engines can match exactly.
// With LLAMACPP_LOGITS_VERBOSE set, llama.cpp's own log goes to stderr.

#include "llama.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

static void quiet_log(enum ggml_log_level level, const char * text, void * /*user*/) {
    if (level >= GGML_LOG_LEVEL_WARN) {
        fputs(text, stderr);
    }
}

static int argmax_lowest(const float * v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) {
        if (v[i] > v[best]) {  // strict: the lowest id wins a tie
            best = i;
        }
    }
    return best;
}

// best logit minus the runner-up (0 on a tie)
static float margin(const float * v, int n) {
    const int best = argmax_lowest(v, n);
    float second = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (i != best && v[i] > second) {
            second = v[i];
        }
    }
    return v[best] - second;
}

int main(int argc, char ** argv) {
    if (argc < 4 || argc > 6) {
        fprintf(stderr, "usage: %s MODEL.gguf LOGITS_OUT GREEDY_OUT [N_PROMPT [N_GREEDY]]\n", argv[0]);
        return 2;
    }
    const char * model_path  = argv[1];
    const char * logits_path = argv[2];
    const char * greedy_path = argv[3];
    const int n_prompt = argc > 4 ? atoi(argv[4]) : 24;
    const int n_greedy = argc > 5 ? atoi(argv[5]) : 20;
    if (n_prompt < 1 || n_greedy < 0 || n_prompt + n_greedy > 512) {
        fprintf(stderr, "bad N_PROMPT/N_GREEDY\n");
        return 2;
    }
    if (getenv("LLAMACPP_LOGITS_VERBOSE") == nullptr) {
        llama_log_set(quiet_log, nullptr);
    }

    llama_backend_init();

    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    mp.use_mmap     = true;
    llama_model * model = llama_model_load_from_file(model_path, mp);
    if (model == nullptr) {
        fprintf(stderr, "cannot load %s\n", model_path);
        return 1;
    }

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx           = 512;
    cp.n_batch         = 512;
    cp.n_ubatch        = 512;
    cp.n_seq_max       = 1;
    cp.n_threads       = 1;
    cp.n_threads_batch = 1;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.type_k          = GGML_TYPE_F32;
    cp.type_v          = GGML_TYPE_F32;
    cp.offload_kqv     = false;
    cp.op_offload      = false;
    cp.no_perf         = true;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (ctx == nullptr) {
        fprintf(stderr, "cannot create a context for %s\n", model_path);
        return 1;
    }

    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    if (n_vocab <= 0) {
        fprintf(stderr, "model reports %d tokens\n", n_vocab);
        return 1;
    }

    // the prompt: one batch, every position's logits
    llama_batch batch = llama_batch_init(n_prompt, 0, 1);
    batch.n_tokens = n_prompt;
    for (int i = 0; i < n_prompt; i++) {
        batch.token[i]     = (37 * i + 5) % 1024;
        batch.pos[i]       = i;
        batch.n_seq_id[i]  = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i]    = 1;
    }
    if (llama_decode(ctx, batch) != 0) {
        fprintf(stderr, "llama_decode of the prompt failed\n");
        return 1;
    }

    FILE * fl = fopen(logits_path, "w");
    if (fl == nullptr) {
        fprintf(stderr, "cannot write %s\n", logits_path);
        return 1;
    }
    for (int i = 0; i < n_prompt; i++) {
        const float * row = llama_get_logits_ith(ctx, i);
        for (int j = 0; j < n_vocab; j++) {
            fprintf(fl, j == 0 ? "%.7g" : " %.7g", row[j]);
        }
        fputc('\n', fl);
    }
    fclose(fl);

    std::vector<float> margins;
    int next = argmax_lowest(llama_get_logits_ith(ctx, n_prompt - 1), n_vocab);
    margins.push_back(margin(llama_get_logits_ith(ctx, n_prompt - 1), n_vocab));
    llama_batch_free(batch);

    std::vector<int> greedy;
    llama_batch one = llama_batch_init(1, 0, 1);
    for (int k = 0; k < n_greedy; k++) {
        greedy.push_back(next);
        one.n_tokens     = 1;
        one.token[0]     = next;
        one.pos[0]       = n_prompt + k;
        one.n_seq_id[0]  = 1;
        one.seq_id[0][0] = 0;
        one.logits[0]    = 1;
        if (llama_decode(ctx, one) != 0) {
            fprintf(stderr, "llama_decode at position %d failed\n", n_prompt + k);
            return 1;
        }
        next = argmax_lowest(llama_get_logits_ith(ctx, 0), n_vocab);
        margins.push_back(margin(llama_get_logits_ith(ctx, 0), n_vocab));
    }
    margins.resize(greedy.size());  // the last decode's logits choose nothing that is written
    llama_batch_free(one);

    FILE * fg = fopen(greedy_path, "w");
    if (fg == nullptr) {
        fprintf(stderr, "cannot write %s\n", greedy_path);
        return 1;
    }
    for (size_t k = 0; k < greedy.size(); k++) {
        fprintf(fg, k == 0 ? "%d" : " %d", greedy[k]);
    }
    fputc('\n', fg);
    fclose(fg);

    if (getenv("LLAMACPP_LOGITS_MARGINS") != nullptr) {
        float lo = INFINITY;
        for (float m : margins) {
            lo = std::fmin(lo, m);
        }
        fprintf(stderr, "min_margin %.6g margins", lo);
        for (float m : margins) {
            fprintf(stderr, " %.4g", m);
        }
        fputc('\n', stderr);
    }

    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
