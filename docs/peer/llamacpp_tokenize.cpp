// llamacpp_tokenize: llama.cpp's token ids for texts, and its special-token attributes, for a
// GGUF vocabulary (a vocab-only file such as ggml-vocab-*.gguf, or a whole model).
//
// EdgeLLM's own program (not llama.cpp code); it links against llama.cpp's libllama.
// Build and use: see docs/peer/README.md.
//
//   llamacpp_tokenize VOCAB.gguf < TEXTS > IDS
//   llamacpp_tokenize VOCAB.gguf --attrs > ATTRS
//
// TEXTS holds texts each followed by "\n__ggml_vocab_test__\n" (the format of llama.cpp's
// ggml-vocab-*.gguf.inp files). For each text IDS gets two lines: the ids of
// llama_tokenize(text, add_special = false, parse_special = false), then those with
// parse_special = true; ids separated by single spaces (an empty line for no ids).
//
// With --attrs it writes instead, one a line: "eog ID" for each end-of-generation token
// (llama_vocab_is_eog), then "attr ID VALUE" for each token whose llama_token_attr is not
// LLAMA_TOKEN_ATTR_NORMAL alone (VALUE in decimal, llama.h's bits).
// With LLAMACPP_TOKENIZE_VERBOSE set, llama.cpp's own log goes to stderr.

#include "llama.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

static void quiet_log(enum ggml_log_level level, const char * text, void * /*user*/) {
    if (level >= GGML_LOG_LEVEL_ERROR) {
        fputs(text, stderr);
    }
}

static bool tokenize(const llama_vocab * vocab, const std::string & text, bool parse_special,
                     std::vector<llama_token> & out) {
    if (text.size() > 0x7fffffff / 2) {
        return false;
    }
    out.resize(text.size() + 16);
    int32_t n = llama_tokenize(vocab, text.data(), (int32_t) text.size(), out.data(), (int32_t) out.size(),
                               false, parse_special);
    if (n < 0) {
        if (n == INT32_MIN) {
            return false;
        }
        out.resize(-n);
        n = llama_tokenize(vocab, text.data(), (int32_t) text.size(), out.data(), (int32_t) out.size(), false,
                           parse_special);
        if (n < 0) {
            return false;
        }
    }
    out.resize(n);
    return true;
}

static void print_ids(const std::vector<llama_token> & ids) {
    for (size_t i = 0; i < ids.size(); i++) {
        printf(i == 0 ? "%d" : " %d", ids[i]);
    }
    putchar('\n');
}

int main(int argc, char ** argv) {
    const bool attrs = argc == 3 && strcmp(argv[2], "--attrs") == 0;
    if (argc != 2 && !attrs) {
        fprintf(stderr, "usage: %s VOCAB.gguf [--attrs] < TEXTS\n", argv[0]);
        return 2;
    }
    if (getenv("LLAMACPP_TOKENIZE_VERBOSE") == nullptr) {
        llama_log_set(quiet_log, nullptr);
    }
    llama_backend_init();

    llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    mp.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (model == nullptr) {
        fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);

    if (attrs) {
        const int n = llama_vocab_n_tokens(vocab);
        for (int id = 0; id < n; id++) {
            if (llama_vocab_is_eog(vocab, id)) {
                printf("eog %d\n", id);
            }
        }
        for (int id = 0; id < n; id++) {
            const int a = (int) llama_vocab_get_attr(vocab, id);
            if (a != LLAMA_TOKEN_ATTR_NORMAL) {
                printf("attr %d %d\n", id, a);
            }
        }
    } else {
        const std::string sep = "\n__ggml_vocab_test__\n";
        std::string all((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
        std::vector<llama_token> ids;
        size_t pos = 0;
        while (pos < all.size()) {
            const size_t end = all.find(sep, pos);
            if (end == std::string::npos) {
                fprintf(stderr, "input does not end with the separator\n");
                return 1;
            }
            const std::string text = all.substr(pos, end - pos);
            for (bool special : {false, true}) {
                if (!tokenize(vocab, text, special, ids)) {
                    fprintf(stderr, "llama_tokenize failed on text at byte %zu\n", pos);
                    return 1;
                }
                print_ids(ids);
            }
            pos = end + sep.size();
        }
    }
    fflush(stdout);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
