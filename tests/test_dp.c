/* test_dp.c: the privacy accountant against values derived independently here: the q = 1 closed
 * form, a direct numerical integration of the Rényi divergence of the subsampled Gaussian
 * mixture, and the exact privacy profile of the Gaussian mechanism (Balle & Wang 2018), which
 * any valid (epsilon, delta) from RDP must respect. Plus clip and CSPRNG-noise sanity. */
#include "pk_net.h"
#include "pk_test.h"

#include <math.h>
#include <sodium.h>
#include <string.h>

/* log E_{x~N(0,s^2)} [ ((1-q) + q * N(x;1,s^2)/N(x;0,s^2))^alpha ], by the trapezoid rule. */
static double log_a_numeric(double q, double s, int alpha)
{
    double lo = -14.0 * s, hi = (double)alpha + 14.0 * s, h = 1e-3;
    long n = (long)((hi - lo) / h);
    double mx = -(double)INFINITY;
    /* two passes: max exponent first, then a scaled sum (no overflow at large alpha) */
    for (int pass = 0; pass < 2; pass++) {
        double sum = 0.0;
        for (long i = 0; i <= n; i++) {
            double x = lo + (double)i * h;
            double ratio = (1.0 - q) + q * exp((2.0 * x - 1.0) / (2.0 * s * s));
            double e = -x * x / (2.0 * s * s) - log(s * sqrt(2.0 * M_PI)) + alpha * log(ratio);
            if (pass == 0) {
                if (e > mx)
                    mx = e;
            } else {
                double w = (i == 0 || i == n) ? 0.5 : 1.0;
                sum += w * exp(e - mx);
            }
        }
        if (pass == 1)
            return mx + log(sum * h);
    }
    return 0.0;
}

static double phi(double x)
{
    return 0.5 * erfc(-x / sqrt(2.0));
}

/* Exact delta(eps) of the Gaussian mechanism with sensitivity 1 and noise sigma_eff. */
static double gaussian_delta(double sigma_eff, double eps)
{
    double mu = 1.0 / sigma_eff;
    return phi(mu / 2.0 - eps / mu) - exp(eps) * phi(-mu / 2.0 - eps / mu);
}

static void test_closed_form(void)
{
    double r = -1.0;
    PK_CHECK_EQ(pk_dp_rdp_step(1.0, 2.0, 8, &r), PK_OK);
    PK_CHECK_NEAR(r, 8.0 / (2.0 * 4.0), 1e-12);
    PK_CHECK_EQ(pk_dp_rdp_step(0.0, 2.0, 8, &r), PK_OK);
    PK_CHECK_NEAR(r, 0.0, 0.0);
    /* q very close to 1 continues the closed form */
    PK_CHECK_EQ(pk_dp_rdp_step(1.0 - 1e-12, 1.5, 5, &r), PK_OK);
    PK_CHECK_NEAR(r, 5.0 / (2.0 * 2.25), 1e-6);
    /* alpha = 2 by hand: A = (1-q)^2 + 2q(1-q) + q^2 e^(1/s^2) = 1 + q^2 (e^(1/s^2) - 1) */
    double q = 0.1, s = 1.0;
    PK_CHECK_EQ(pk_dp_rdp_step(q, s, 2, &r), PK_OK);
    PK_CHECK_NEAR(r, log(1.0 + q * q * (exp(1.0 / (s * s)) - 1.0)), 1e-12);
    /* bad arguments */
    PK_CHECK_EQ(pk_dp_rdp_step(1.5, 1.0, 2, &r), PK_ERR_ARG);
    PK_CHECK_EQ(pk_dp_rdp_step(0.5, 0.0, 2, &r), PK_ERR_ARG);
    PK_CHECK_EQ(pk_dp_rdp_step(0.5, 1.0, 1, &r), PK_ERR_ARG);
    PK_CHECK_EQ(pk_dp_rdp_step((double)NAN, 1.0, 2, &r), PK_ERR_ARG);
}

static void test_against_integration(void)
{
    static const struct {
        double q, s;
        int alpha;
    } cases[] = {{0.01, 1.0, 2}, {0.01, 1.0, 8},  {0.05, 0.8, 4}, {0.2, 1.5, 16},
                 {0.5, 2.0, 6},  {0.001, 0.7, 3}, {0.3, 4.0, 32}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double r = 0.0;
        PK_CHECK_EQ(pk_dp_rdp_step(cases[i].q, cases[i].s, cases[i].alpha, &r), PK_OK);
        double want = log_a_numeric(cases[i].q, cases[i].s, cases[i].alpha) / (cases[i].alpha - 1);
        PK_CHECK_NEAR(r, want, 1e-6 + 1e-6 * fabs(want));
    }
}

static void test_epsilon(void)
{
    /* q = 1: T Gaussian steps at sigma = one Gaussian at sigma/sqrt(T); the RDP epsilon must be
     * valid (exact delta at that epsilon <= target) and not loose (within 25%). */
    static const struct {
        double s;
        int64_t T;
    } g[] = {{1.0, 1}, {2.0, 1}, {5.0, 10}, {10.0, 100}};
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
        double delta = 1e-5, eps = 0.0;
        PK_CHECK_EQ(pk_dp_epsilon_for(1.0, g[i].s, g[i].T, delta, &eps), PK_OK);
        double s_eff = g[i].s / sqrt((double)g[i].T);
        PK_CHECK(gaussian_delta(s_eff, eps) <= delta);
        /* the exact epsilon by bisection */
        double lo = 0.0, hi = 100.0;
        for (int it = 0; it < 200; it++) {
            double mid = 0.5 * (lo + hi);
            if (gaussian_delta(s_eff, mid) > delta)
                lo = mid;
            else
                hi = mid;
        }
        PK_CHECK(eps >= hi - 1e-9);
        PK_CHECK(eps <= 1.25 * hi);
    }
    /* monotonicity: more steps or less noise or smaller delta cost more */
    double e1, e2, e3, e4;
    PK_CHECK_EQ(pk_dp_epsilon_for(0.01, 1.1, 1000, 1e-5, &e1), PK_OK);
    PK_CHECK_EQ(pk_dp_epsilon_for(0.01, 1.1, 4000, 1e-5, &e2), PK_OK);
    PK_CHECK_EQ(pk_dp_epsilon_for(0.01, 0.9, 1000, 1e-5, &e3), PK_OK);
    PK_CHECK_EQ(pk_dp_epsilon_for(0.01, 1.1, 1000, 1e-7, &e4), PK_OK);
    PK_CHECK(e2 > e1);
    PK_CHECK(e3 > e1);
    PK_CHECK(e4 > e1);
    /* subsampling amplifies: q = 0.01 costs far less than q = 1 */
    double full;
    PK_CHECK_EQ(pk_dp_epsilon_for(1.0, 1.1, 1000, 1e-5, &full), PK_OK);
    PK_CHECK(e1 < 0.1 * full);
    /* accumulation across rounds equals one call with the total step count */
    double rdp[PK_DP_N_ORDERS], acc;
    memset(rdp, 0, sizeof rdp);
    PK_CHECK_EQ(pk_dp_rdp_add(0.01, 1.1, 600, rdp), PK_OK);
    PK_CHECK_EQ(pk_dp_rdp_add(0.01, 1.1, 400, rdp), PK_OK);
    int order = 0;
    PK_CHECK_EQ(pk_dp_epsilon(rdp, 1e-5, &acc, &order), PK_OK);
    PK_CHECK_NEAR(acc, e1, 1e-9 * e1);
    PK_CHECK(order >= 2 && order <= PK_DP_MAX_ORDER);
    PK_CHECK_EQ(pk_dp_epsilon(rdp, 0.0, &acc, NULL), PK_ERR_ARG);
    PK_CHECK_EQ(pk_dp_epsilon(rdp, 1.0, &acc, NULL), PK_ERR_ARG);
    /* zero steps: nothing spent */
    memset(rdp, 0, sizeof rdp);
    PK_CHECK_EQ(pk_dp_epsilon(rdp, 1e-5, &acc, NULL), PK_OK);
    PK_CHECK_NEAR(acc, 0.0, 0.0);
}

static void test_clip_noise(void)
{
    PK_CHECK(pk_dp_clip(3.0f, 1.0f) == 1.0f);
    PK_CHECK(pk_dp_clip(-3.0f, 1.0f) == -1.0f);
    PK_CHECK(pk_dp_clip(0.25f, 1.0f) == 0.25f);
    PK_CHECK(pk_dp_clip(NAN, 1.0f) == 0.0f);
    PK_CHECK(pk_dp_clip(INFINITY, 2.0f) == 2.0f);
    enum { N = 40000 };
    double sum = 0.0, sq = 0.0, mx = 0.0;
    for (int i = 0; i < N; i++) {
        double x = pk_dp_gaussian(2.0);
        PK_CHECK(isfinite(x));
        sum += x;
        sq += x * x;
        if (fabs(x) > mx)
            mx = fabs(x);
    }
    double mean = sum / N, var = sq / N - mean * mean;
    PK_CHECK_NEAR(mean, 0.0, 5.0 * 2.0 / sqrt((double)N));
    PK_CHECK_NEAR(var, 4.0, 0.15);
    PK_CHECK(mx > 5.0 && mx < 2.0 * 7.0); /* tails present, nothing absurd */
    PK_CHECK(pk_dp_gaussian(1.0) != pk_dp_gaussian(1.0));
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    test_closed_form();
    test_against_integration();
    test_epsilon();
    test_clip_noise();
    return PK_TEST_DONE();
}
