/* dp.c: the privacy accountant of the sync client (RDP of the Poisson-subsampled Gaussian
 * mechanism, integer orders, and the RDP -> (epsilon, delta) conversion) plus the clip and
 * Gaussian-noise helpers. What a "step" protects (one clipped scalar per local step) is decided
 * by sync.c and documented in docs/SYNC.md. */
#include "pk_crypto.h"
#include "pk_net.h"

#include <math.h>
#include <string.h>

static double log_add(double a, double b)
{
    if (a == -(double)INFINITY)
        return b;
    if (b == -(double)INFINITY)
        return a;
    double hi = a > b ? a : b, lo = a > b ? b : a;
    return hi + log1p(exp(lo - hi));
}

/* log C(n, k) via lgamma (only called from the accountant, which is not on any hot path). */
static double log_binom(int n, int k)
{
    return lgamma((double)n + 1.0) - lgamma((double)k + 1.0) - lgamma((double)(n - k) + 1.0);
}

pk_status pk_dp_rdp_step(double q, double sigma, int alpha, double *rdp)
{
    if (!rdp || !(q >= 0.0 && q <= 1.0) || !(sigma > 0.0) || !isfinite(sigma) || alpha < 2)
        return PK_ERR_ARG;
    if (q == 0.0) {
        *rdp = 0.0;
        return PK_OK;
    }
    if (q == 1.0) {
        *rdp = (double)alpha / (2.0 * sigma * sigma);
        return PK_OK;
    }
    /* A_alpha = sum_i C(alpha,i) (1-q)^(alpha-i) q^i exp((i^2 - i) / (2 sigma^2)), in log space. */
    double log_a = -(double)INFINITY, lq = log(q), l1q = log1p(-q);
    for (int i = 0; i <= alpha; i++) {
        double term = log_binom(alpha, i) + (double)i * lq + (double)(alpha - i) * l1q +
                      ((double)i * (double)i - (double)i) / (2.0 * sigma * sigma);
        log_a = log_add(log_a, term);
    }
    *rdp = log_a / (double)(alpha - 1);
    if (*rdp < 0.0) /* round-off near q -> 0 */
        *rdp = 0.0;
    return PK_OK;
}

pk_status pk_dp_rdp_add(double q, double sigma, int64_t steps, double rdp[PK_DP_N_ORDERS])
{
    if (!rdp || steps < 0)
        return PK_ERR_ARG;
    for (int j = 0; j < PK_DP_N_ORDERS; j++) {
        double r = 0.0;
        pk_status st = pk_dp_rdp_step(q, sigma, PK_DP_ORDER(j), &r);
        if (st != PK_OK)
            return st;
        rdp[j] += (double)steps * r;
    }
    return PK_OK;
}

pk_status pk_dp_epsilon(const double rdp[PK_DP_N_ORDERS], double delta, double *eps, int *order)
{
    if (!rdp || !eps || !(delta > 0.0 && delta < 1.0))
        return PK_ERR_ARG;
    double best = (double)INFINITY;
    int best_order = 0, spent = 0;
    for (int j = 0; j < PK_DP_N_ORDERS; j++) {
        double a = (double)PK_DP_ORDER(j);
        if (!(rdp[j] >= 0.0))
            return PK_ERR_ARG;
        spent |= rdp[j] > 0.0;
        double e = rdp[j] - (log(delta) + log(a)) / (a - 1.0) + log((a - 1.0) / a);
        if (e < best) {
            best = e;
            best_order = PK_DP_ORDER(j);
        }
    }
    *eps = (best < 0.0 || !spent) ? 0.0 : best; /* nothing released: nothing spent */
    if (order)
        *order = best_order;
    return PK_OK;
}

pk_status pk_dp_epsilon_for(double q, double sigma, int64_t steps, double delta, double *eps)
{
    double rdp[PK_DP_N_ORDERS];
    memset(rdp, 0, sizeof rdp);
    pk_status st = pk_dp_rdp_add(q, sigma, steps, rdp);
    if (st != PK_OK)
        return st;
    return pk_dp_epsilon(rdp, delta, eps, NULL);
}

float pk_dp_clip(float g, float c)
{
    if (isnan(g))
        return 0.0f;
    if (g > c)
        return c;
    if (g < -c)
        return -c;
    return g;
}

double pk_dp_gaussian(double stddev)
{
    /* Box-Muller; libm is fine here (the noise need not be reproducible, only unpredictable).
     * u1 is in the open interval (0, 1), so log(u1) is finite. */
    double u1 = pk_crypto_random_double(), u2 = pk_crypto_random_double();
    return stddev * sqrt(-2.0 * log(u1)) * cos(2.0 * 3.14159265358979323846 * u2);
}
