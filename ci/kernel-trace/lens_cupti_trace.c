// A CUDA injection library that records every GPU kernel, memcpy and memset of a process with CUPTI's activity API,
// so the same workload can be compared kernel by kernel between diffusers (Python) and the C# sweep: both run the
// same libtorch, so kernel names match. Built and used by ci/kernel_trace.py:
//   gcc -O2 -shared -fPIC -I<nvidia/cu13/include> lens_cupti_trace.c -o liblens_cupti_trace.so -L<lib> -lcupti
//   CUDA_INJECTION64_PATH=.../liblens_cupti_trace.so LENS_CUPTI_OUT=/tmp/x <command>
// writes /tmp/x.names.tsv (id, name) and /tmp/x.trace.bin (records of uint64 start ns, uint64 end ns, uint32 id,
// uint32 kind: 0 kernel, 1 memcpy, 2 memset) when the process exits.
#include <cupti.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// the newest record versions of the installed CUPTI (ci/kernel_trace.py passes them from cupti_activity.h)
#ifndef LENS_KERNEL_RECORD
#define LENS_KERNEL_RECORD CUpti_ActivityKernel9
#endif
#ifndef LENS_MEMCPY_RECORD
#define LENS_MEMCPY_RECORD CUpti_ActivityMemcpy6
#endif
#ifndef LENS_MEMSET_RECORD
#define LENS_MEMSET_RECORD CUpti_ActivityMemset4
#endif

typedef struct { uint64_t start, end; uint32_t id, kind; } rec_t;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static rec_t *recs; static size_t nrecs, caprecs;
static const char **names; static size_t nnames, capnames;
static const char *keys[1 << 16]; static uint32_t vals[1 << 16];
static int dumped;

static uint32_t name_id(const char *name)
{
    // CUPTI shares one name string between all records of a kernel: the pointer is the key
    size_t h = ((uintptr_t)name >> 4) & 0xffff;
    while (keys[h] && keys[h] != name) h = (h + 1) & 0xffff;
    if (!keys[h]) {
        if (nnames == capnames) { capnames = capnames ? 2 * capnames : 1024; names = realloc(names, capnames * sizeof *names); }
        names[nnames] = strdup(name ? name : "?");
        keys[h] = name; vals[h] = (uint32_t)nnames++;
    }
    return vals[h];
}

static void add(uint64_t s, uint64_t e, uint32_t id, uint32_t kind)
{
    if (nrecs == caprecs) { caprecs = caprecs ? 2 * caprecs : 1 << 16; recs = realloc(recs, caprecs * sizeof *recs); }
    recs[nrecs++] = (rec_t){ s, e, id, kind };
}

static void CUPTIAPI requested(uint8_t **buffer, size_t *size, size_t *max)
{
    *size = 8 << 20;
    *buffer = aligned_alloc(8, *size);
    *max = 0;
}

static void CUPTIAPI completed(CUcontext ctx, uint32_t stream, uint8_t *buffer, size_t size, size_t valid)
{
    (void)ctx; (void)stream; (void)size;
    CUpti_Activity *r = NULL;
    pthread_mutex_lock(&mu);
    while (cuptiActivityGetNextRecord(buffer, valid, &r) == CUPTI_SUCCESS) {
        if (r->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || r->kind == CUPTI_ACTIVITY_KIND_KERNEL) {
            LENS_KERNEL_RECORD *k = (LENS_KERNEL_RECORD *)r;
            add(k->start, k->end, name_id(k->name), 0);
        } else if (r->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
            LENS_MEMCPY_RECORD *m = (LENS_MEMCPY_RECORD *)r;
            static const char *kinds[] = { "memcpy ?", "memcpy HtoD", "memcpy DtoH", "memcpy HtoA", "memcpy AtoH",
                                           "memcpy AtoA", "memcpy AtoD", "memcpy DtoA", "memcpy DtoD", "memcpy HtoH", "memcpy PtoP" };
            add(m->start, m->end, name_id(kinds[m->copyKind < 11 ? m->copyKind : 0]), 1);
        } else if (r->kind == CUPTI_ACTIVITY_KIND_MEMSET) {
            LENS_MEMSET_RECORD *m = (LENS_MEMSET_RECORD *)r;
            static const char *memset_name = "memset";
            add(m->start, m->end, name_id(memset_name), 2);
        }
    }
    pthread_mutex_unlock(&mu);
    free(buffer);
}

static void dump(void)
{
    if (dumped) return;
    cuptiActivityFlushAll(1);
    pthread_mutex_lock(&mu);
    dumped = 1;
    const char *out = getenv("LENS_CUPTI_OUT");
    if (!out) out = "/tmp/lens-cupti";
    char path[4096];
    snprintf(path, sizeof path, "%s.names.tsv", out);
    FILE *f = fopen(path, "w");
    if (f) { for (size_t i = 0; i < nnames; i++) fprintf(f, "%zu\t%s\n", i, names[i]); fclose(f); }
    snprintf(path, sizeof path, "%s.trace.bin", out);
    f = fopen(path, "wb");
    if (f) { fwrite(recs, sizeof *recs, nrecs, f); fclose(f); }
    fprintf(stderr, "lens-cupti-trace: %zu records, %zu names -> %s.*\n", nrecs, nnames, out);
    pthread_mutex_unlock(&mu);
}

// the CUDA driver calls this once, at cuInit, when CUDA_INJECTION64_PATH names this library
int InitializeInjection(void)
{
    cuptiActivityRegisterCallbacks(requested, completed);
    cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
    cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY);
    cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMSET);
    cuptiActivityFlushPeriod(50); // completed buffers arrive every 50 ms, so little is left for the flush at exit
    atexit(dump);
    return 1;
}
