using Engine.Models;
using Engine.Models.ConvNeXt;
using Engine.Models.Swin;
using Engine.Models.Vit;

namespace Engine.Tests;

/// <summary>The small ViT, Swin and ConvNeXt the whole-run tests train: 16×16 images, 5 classes, two blocks or
/// stages each, seed 3.</summary>
static class TinyModels
{
    public const int Size = 16, Classes = 5;

    /// <summary>A model of <paramref name="family"/> (vit; vit64, heads of 64 values as the tensor-core attention takes
    /// them; swin; anything else ConvNeXt) on <paramref name="device"/>.</summary>
    public static IImageClassifier Create(string family, Device device) => family switch
    {
        "vit" => new VisionTransformer(device, new VitConfig { img_size = Size, patch_size = 4, embed_dim = 32, depth = 2, num_heads = 2, num_classes = Classes }, seed: 3),
        "vit64" => new VisionTransformer(device, new VitConfig { img_size = Size, patch_size = 4, embed_dim = 128, depth = 2, num_heads = 2, num_classes = Classes }, seed: 3),
        "swin" => new Swin(device, new SwinConfig { img_size = Size, patch_size = 2, embed_dim = 8, depths = [2, 2], num_heads = [2, 2], window_size = 4, num_classes = Classes }, seed: 3),
        _ => new ConvNeXt(device, new ConvNeXtConfig { img_size = Size, depths = [1, 1], dims = [8, 16], num_classes = Classes }, seed: 3),
    };
}
