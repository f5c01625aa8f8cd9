"""PytorchWCT's whitening and colouring (sunshineatnoon/PytorchWCT at commit ee9d813, ``util.py``
``WCT.whiten_and_color`` and ``WCT.transform``), written out from the published code: the reference that the
one-level WCT transform (tests/test_transforms.py) and the WCT cascade (tests/test_wct.py) are checked against."""

from __future__ import annotations

import torch


def reference_whiten_and_color(cF, sF):  # PytorchWCT util.py WCT.whiten_and_color (cF, sF: (C, H*W) float64)
    cFSize = cF.size()
    c_mean = torch.mean(cF, 1).unsqueeze(1).expand_as(cF)
    cF = cF - c_mean
    contentConv = torch.mm(cF, cF.t()).div(cFSize[1] - 1) + torch.eye(cFSize[0]).double()
    c_u, c_e, c_v = torch.svd(contentConv, some=False)
    k_c = cFSize[0]
    for i in range(cFSize[0]):
        if c_e[i] < 0.00001:
            k_c = i
            break
    sFSize = sF.size()
    s_mean = torch.mean(sF, 1)
    sF = sF - s_mean.unsqueeze(1).expand_as(sF)
    styleConv = torch.mm(sF, sF.t()).div(sFSize[1] - 1)
    s_u, s_e, s_v = torch.svd(styleConv, some=False)
    k_s = sFSize[0]
    for i in range(sFSize[0]):
        if s_e[i] < 0.00001:
            k_s = i
            break
    c_d = (c_e[0:k_c]).pow(-0.5)
    whiten_cF = torch.mm(torch.mm(torch.mm(c_v[:, 0:k_c], torch.diag(c_d)), c_v[:, 0:k_c].t()), cF)
    s_d = (s_e[0:k_s]).pow(0.5)
    target = torch.mm(torch.mm(torch.mm(s_v[:, 0:k_s], torch.diag(s_d)), s_v[:, 0:k_s].t()), whiten_cF)
    return target + s_mean.unsqueeze(1).expand_as(target)


def reference_wct(cF, sF, alpha):  # PytorchWCT util.py WCT.transform (cF, sF: (C, H, W)); returns (1, C, H, W)
    cF, sF = cF.double(), sF.double()
    C = cF.size(0)
    target = reference_whiten_and_color(cF.view(C, -1), sF.view(C, -1)).view_as(cF)
    return (alpha * target + (1.0 - alpha) * cF).float().unsqueeze(0)
